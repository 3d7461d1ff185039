"""Peak host memory of exporting a synthetic >= 2B-parameter DiT checkpoint to ONNX.

The 14B DiT is ~28 GB in bf16 and must export on a 24 GB host: the export traces on the
meta device and streams the weights into the external data one tensor at a time. This
runs `sama-rt export --models dit` on the Wan2.1-layout synthetic checkpoint written by
`benchmarks/load_memory.py` (bf16, dim 3072, 17 layers, ~2.2 B parameters) in a fresh
process and reports its peak RSS against the checkpoint size, then checks that the
exported weights are byte-identical to the checkpoint's.

    python benchmarks/export_memory.py --workdir /tmp/sama-load [--json]
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path


def export_in_child(ckpt: Path, out: Path) -> tuple[float, int]:
    """(seconds, peak RSS bytes) of the export command in a fresh process."""
    cmd = [
        sys.executable, "-m", "sama_rt.export.command", "--wan-dir", str(ckpt), "--models", "dit",
        "--dtype", "bf16", "--out", str(out), "--json",
    ]
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.stderr.write(result.stderr[-4000:])
        raise SystemExit(f"export failed with exit code {result.returncode}")
    # This process holds no weights, so the children's maximum is the export's.
    return seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


def check_weights(ckpt: Path, out: Path, samples: int = 6) -> int:
    """Compare a few exported tensors with the checkpoint, byte for byte."""
    import onnx
    import torch

    from sama_rt.models.checkpoint import CheckpointIndex

    model = onnx.load(str(out / "dit.onnx"), load_external_data=False)
    index = CheckpointIndex(ckpt)
    external = [t for t in model.graph.initializer if t.external_data and t.name in index]
    step = max(1, len(external) // samples)
    checked = 0
    for tensor in external[::step]:
        info = {e.key: e.value for e in tensor.external_data}
        with open(out / info["location"], "rb") as f:
            f.seek(int(info.get("offset", 0)))
            data = f.read(int(info["length"]))
        want = index.get(tensor.name).to(torch.bfloat16).contiguous().view(torch.int16).numpy().tobytes()
        if data != want:
            raise SystemExit(f"exported bytes of {tensor.name} differ from the checkpoint")
        checked += 1
    return checked


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/sama-load"))
    ap.add_argument("--keep", action="store_true", help="keep the exported graph")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    ckpt = args.workdir / "wan"
    if not (ckpt / "diffusion_pytorch_model.safetensors.index.json").exists():
        # The same synthetic checkpoint the load benchmark uses; written in a child.
        subprocess.run([sys.executable, str(Path(__file__).with_name("load_memory.py")),
                        "--workdir", str(args.workdir), "--write-only"], check=True)
    out = args.workdir / "onnx"
    shutil.rmtree(out, ignore_errors=True)
    base = subprocess.run(
        [sys.executable, "-c", "import resource, torch, onnx, onnxscript, sama_rt.export.command;"
         "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)"],
        capture_output=True, text=True, check=True,
    )
    seconds, peak = export_in_child(ckpt, out)
    manifest = json.loads((out / "manifest.json").read_text())["graphs"]["dit"]
    result = {
        "checkpoint_bytes": sum(f.stat().st_size for f in ckpt.glob("*.safetensors")),
        "onnx_data_bytes": manifest["weights"]["bytes"],
        "initializers": manifest["weights"]["initializers"],
        "peak_rss_bytes": peak,
        "import_rss_bytes": int(base.stdout.strip()),
        "export_s": seconds,
        "lint_ok": manifest["lint"]["ok"],
        "checker": manifest["checker"],
        "tensors_compared": check_weights(ckpt, out),
    }
    result["peak_over_checkpoint"] = result["peak_rss_bytes"] / result["checkpoint_bytes"]
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
        return
    gib = 2**30
    print(f"checkpoint (bf16)   {result['checkpoint_bytes'] / gib:.2f} GiB")
    print(f"onnx external data  {result['onnx_data_bytes'] / gib:.2f} GiB, {result['initializers']} initializers")
    print(f"peak RSS of export  {peak / gib:.2f} GiB (imports alone {result['import_rss_bytes'] / gib:.2f} GiB)")
    print(f"peak / checkpoint   {result['peak_over_checkpoint']:.2f}")
    print(f"export time         {seconds:.1f} s (trace, weights, checker, lint)")
    print(f"checker {result['checker']}, lint ok {result['lint_ok']}, "
          f"{result['tensors_compared']} tensors byte-identical to the checkpoint")


if __name__ == "__main__":
    main()
