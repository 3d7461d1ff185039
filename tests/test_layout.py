"""Packaging: sub-package names, and what imports on a core install."""
import subprocess
import sys

BLOCKER = (
    "import sys\n"
    "class Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in {blocked!r}:\n"
    "            raise ImportError('blocked ' + name)\n"
    "sys.meta_path.insert(0, Block())\n"
)


def run_python(code: str, blocked: tuple = ()) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter where importing any of `blocked` fails."""
    return subprocess.run([sys.executable, "-c", BLOCKER.format(blocked=set(blocked)) + code],
                          capture_output=True, text=True, cwd="/")


def test_subpackages_never_imported_top_level():
    """kernels/, export/ and engines/ install as sama_rt sub-packages, never as top-level names."""
    out = run_python(
        "import importlib, sama_rt\n"
        "for name in ['sama_rt.kernels', 'sama_rt.export', 'sama_rt.engines', 'sama_rt.models']:\n"
        "    importlib.import_module(name)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('kernels', 'export', 'engines')]\n"
        "assert not bad, bad\n"
        "import sama_rt.kernels as k\n"
        "print(k.__name__)\n"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "sama_rt.kernels"


def test_cli_builds_without_the_export_extra():
    """`sama-rt demo` must run on a core install: no onnx import while building the CLI."""
    out = run_python(
        "from sama_rt.cli import build_parser\n"
        "p = build_parser()\n"
        "args = p.parse_args(['export', '--random-weights', '--config', 'tiny', '--out', '/tmp/x'])\n"
        "print(args.func(args))\n",
        blocked=("onnx", "onnxruntime", "onnxscript", "triton", "tensorrt"),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "2"
    assert "sama-rt[export]" in out.stderr


def test_dit_and_bench_import_without_the_video_stack():
    """GPU benchmark machines may lack PyAV: the DiT, kernels and bench must not need it."""
    out = run_python(
        "import sama_rt.bench, sama_rt.models, sama_rt.guided, sama_rt.reference\n"
        "from sama_rt.cli import build_parser\n"
        "build_parser()\n"
        "print('ok')\n",
        blocked=("av",),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
