"""Error of the FP8 anchor-attention kernels against the native one, at a small shape.

    TRITON_INTERPRET=1 python benchmarks/fp8_attention_error.py [--frames 2 --height 4 --width 8] [--seeds 3] [--json]

On CPU it needs the Triton interpreter (e4m3 dots work there; the bf16 kernel's dots run in
float32 on bf16-rounded operands, the tensor cores' arithmetic up to summation order), on a
GPU it runs compiled (Hopper for the copies kernel). For each seed: q, k, v ~ N(0, 1) in
bf16, 65 anchors, head_dim 128, 2 heads; the FP8 kernels (keys rotated in the loop; over
e4m3 copies, kernels/fp8_copies.py) against the native bf16 kernel on the same inputs and
against a float32 reference: max abs and rms difference, rms relative to the output's rms,
cosine similarity. The real shapes' figures come from benchmarks/attention.py on a GPU.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NUM_ANCHOR, HEADS, HEAD_DIM = 65, 2, 128
VARIANTS = {"fp8 in-loop": dict(precision="fp8"), "fp8 copies": dict(precision="fp8", keys="copies")}


def compare(out: torch.Tensor, want: torch.Tensor) -> dict:
    out, want = out.float(), want.float()
    rms = (out - want).pow(2).mean().sqrt().item()
    return {"max_abs": (out - want).abs().max().item(), "rms": rms,
            "rms_relative": rms / want.pow(2).mean().sqrt().item(),
            "cosine": F.cosine_similarity(out.flatten(), want.flatten(), dim=0).item()}


def measure(frames: int, height: int, width: int, seed: int, device: str) -> list[dict]:
    from sama_rt.kernels import anchor_attention, anchor_attention_ref, rope_tables

    gen = torch.Generator().manual_seed(seed)
    seq_len = 2 * frames * height * width + NUM_ANCHOR
    q, k, v = (torch.randn(1, seq_len, HEADS, HEAD_DIM, generator=gen).to(device, torch.bfloat16) for _ in range(3))
    cos, sin = rope_tables(frames, height, width, HEAD_DIM, device=device)
    reference = anchor_attention_ref(q.float(), k.float(), v.float(), cos, sin, NUM_ANCHOR)
    native = anchor_attention(q, k, v, cos, sin, NUM_ANCHOR)
    rows = [{"seed": seed, "variant": "bf16", "against": "fp32 reference", **compare(native, reference)}]
    for name, options in VARIANTS.items():
        out = anchor_attention(q, k, v, cos, sin, NUM_ANCHOR, **options)
        rows.append({"seed": seed, "variant": name, "against": "bf16 kernel", **compare(out, native)})
        rows.append({"seed": seed, "variant": name, "against": "fp32 reference", **compare(out, reference)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--height", type=int, default=4)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from sama_rt.kernels.anchor_attention import _INTERPRETED

    if not _INTERPRETED and not (torch.cuda.is_available() and torch.cuda.get_device_capability() >= (9, 0)):
        print("needs TRITON_INTERPRET=1 (CPU) or a Hopper GPU", file=sys.stderr)
        return 2
    device = "cpu" if _INTERPRETED else "cuda"
    rows = [row for seed in range(args.seeds) for row in measure(args.frames, args.height, args.width, seed, device)]
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"N = {args.frames * args.height * args.width}, A = {NUM_ANCHOR}, head_dim {HEAD_DIM}, {HEADS} heads, bf16, "
          f"{'interpreter' if _INTERPRETED else torch.cuda.get_device_name()}")
    print("| variant | against | max abs | rms | rms / output rms | cosine |\n|---|---|---|---|---|---|")
    for variant in ["bf16", *VARIANTS]:
        for against in ("bf16 kernel", "fp32 reference"):
            mine = [r for r in rows if r["variant"] == variant and r["against"] == against]
            if mine:
                cells = [f"{min(r[key] for r in mine):.2e} - {max(r[key] for r in mine):.2e}"
                         for key in ("max_abs", "rms", "rms_relative")]
                cosine = f"{min(r['cosine'] for r in mine):.5f} - {max(r['cosine'] for r in mine):.5f}"
                print(f"| {variant} | {against} | {' | '.join(cells)} | {cosine} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
