"""Peak host memory of loading a synthetic >= 2B-parameter DiT from Wan2.1-style shards.

Writes a random bf16 checkpoint (sharded safetensors + index json, the Wan2.1 layout) with
the real key names, then loads it with `load_dit` in a fresh process and reports that
process's peak RSS against the checkpoint size.

    python benchmarks/load_memory.py --workdir /tmp/sama-load [--json]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

# 17 layers at dim 3072: ~2.2 B parameters, the 14B architecture scaled down.
CONFIG = dict(dim=3072, ffn_dim=8192, num_heads=24, num_layers=17, text_dim=4096)


def write_checkpoint(out: Path, shards: int = 4) -> int:
    from safetensors.torch import save_file

    from sama_rt.models.dit import DiTConfig, SamaDiT

    with torch.device("meta"):
        model = SamaDiT(DiTConfig(**CONFIG))
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    keys = sorted(shapes)
    out.mkdir(parents=True, exist_ok=True)
    weight_map, total = {}, 0
    gen = torch.Generator().manual_seed(0)
    for i in range(shards):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: (torch.randn(shapes[k], generator=gen) * 0.02).to(torch.bfloat16) for k in keys[i::shards]}
        total += sum(t.numel() for t in part.values())
        save_file(part, str(out / name))
        weight_map.update({k: name for k in part})
        del part
    (out / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    return total


def load_in_child(ckpt: Path) -> dict:
    code = (
        "import json, resource, sys, time, torch\n"
        "from sama_rt.models import load_dit\n"
        "t = time.perf_counter()\n"
        f"m = load_dit({str(ckpt)!r}, dtype=torch.bfloat16)\n"
        "dt = time.perf_counter() - t\n"
        "rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024\n"
        "# Touch every weight so lazily mapped pages count too.\n"
        "n = sum(p.numel() for p in m.parameters() if p.float().sum() is not None)\n"
        "print(json.dumps({'params': n, 'load_s': dt, 'peak_rss_after_load_bytes': rss_loaded,"
        " 'peak_rss_bytes': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/sama-load"))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--write-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    ckpt = args.workdir / "wan"
    if args.write_only:
        write_checkpoint(ckpt)
        return
    if not (ckpt / "diffusion_pytorch_model.safetensors.index.json").exists():
        # Write in a child: ru_maxrss is inherited across fork, so the measuring children
        # must not be forked from a process that held the generated tensors.
        subprocess.run([sys.executable, __file__, "--workdir", str(args.workdir), "--write-only"], check=True)
    if args.write_only:
        return
    size = sum(f.stat().st_size for f in ckpt.glob("*.safetensors"))
    # The interpreter + torch import alone, for the baseline.
    base = subprocess.run(
        [sys.executable, "-c", "import resource, torch, sama_rt.models;"
         "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)"],
        capture_output=True, text=True, check=True,
    )
    result = load_in_child(ckpt)
    result.update(checkpoint_bytes=size, import_rss_bytes=int(base.stdout.strip()))
    result["peak_over_checkpoint"] = (result["peak_rss_bytes"] - result["import_rss_bytes"]) / size
    if args.json:
        print(json.dumps(result))
    else:
        gib = 2**30
        print(f"parameters        {result['params'] / 1e9:.2f} B")
        print(f"checkpoint (bf16) {size / gib:.2f} GiB")
        print(f"peak RSS after load {result['peak_rss_after_load_bytes'] / gib:.2f} GiB")
        print(f"peak RSS (weights touched) {result['peak_rss_bytes'] / gib:.2f} GiB "
              f"(imports alone {result['import_rss_bytes'] / gib:.2f} GiB)")
        print(f"(peak - imports) / checkpoint = {result['peak_over_checkpoint']:.2f}")
        print(f"load time         {result['load_s']:.1f} s")


if __name__ == "__main__":
    main()
