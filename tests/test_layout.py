"""kernels/, export/ and engines/ install as sama_rt sub-packages, never as top-level names."""
import subprocess
import sys


def test_subpackages_never_imported_top_level():
    code = (
        "import sys, importlib, pkgutil, sama_rt\n"
        "for name in ['sama_rt.kernels', 'sama_rt.export', 'sama_rt.engines', 'sama_rt.models']:\n"
        "    importlib.import_module(name)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('kernels', 'export', 'engines')]\n"
        "assert not bad, bad\n"
        "import sama_rt.kernels as k\n"
        "print(k.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "sama_rt.kernels"
