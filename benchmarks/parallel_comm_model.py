"""Analytic communication model of sama_rt.parallel for the 14B DiT, next to its compute.

For each clip length, GPU count P and strategy, one transformer layer of one guidance pass
(batch 1; cfg-parallel runs the two passes on two such groups):

- compute per GPU: the layer's FLOPs / P at a sustained rate (--tflops);
- Ulysses: two all-to-alls per layer (q, k, v before attention, the output after), each
  GPU sends (P-1)/P of its 4 * (L/P) * dim bf16 values. They sit on the critical path
  (attention needs all of q, k, v), so their time adds to the layer's;
- ring: each GPU passes its K and V chunk (2 * (L/P) * dim bf16) around the ring P-1
  times. Each transfer overlaps the attention of the block in hand, so the ring hides as
  long as one block's attention (4 (L/P)^2 dim FLOPs) takes longer than one transfer
  (4 (L/P) dim bytes): L/P >= sustained FLOP/s / link bytes/s.

Everything else the parallel path sends is per step, not per layer, and small: the head's
output rows (L/P x 64 float32) and the anchors' semantic predictions (65 x 1152 float32).

    python benchmarks/parallel_comm_model.py [--tflops 500] [--json]

An estimate for planning, not a measurement: multi-GPU timings await a multi-GPU machine.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass

from sama_rt.models.dit import DiTConfig

BF16 = 2
TEXT_ROWS = 512
NUM_ANCHOR = 65
# Per GPU, per direction: NVLink 4 (H100 SXM, NVSwitch), PCIe peer-to-peer as measured on
# typical boxes, InfiniBand NDR 400 Gb/s (one NIC per GPU) between nodes.
LINKS_GB_S = {"NVLink": 450.0, "PCIe": 25.0, "IB": 50.0}
GPU_COUNTS = (2, 4, 8, 16)
CLIPS = {49: 13, 81: 21}  # frames -> latent frames
TOKENS_PER_LATENT_FRAME = 30 * 52  # 480x832: latent 60x104, patch 2x2


@dataclass(frozen=True)
class Row:
    frames: int
    tokens: int
    gpus: int
    strategy: str
    mbytes_per_gpu: float  # sent per GPU per layer
    compute_ms: float  # per GPU per layer
    comm_ms: dict  # link -> ms per GPU per layer
    hidden: dict  # link -> whether that time hides (see the module docstring)


def sequence_length(frames: int) -> int:
    return 2 * CLIPS[frames] * TOKENS_PER_LATENT_FRAME + NUM_ANCHOR


def layer_flops(cfg: DiTConfig, length: int) -> float:
    """One block of one pass; the text K/V are cached per edit, so not counted."""
    d = cfg.dim
    return (
        2 * length * 4 * d * d  # self-attention q, k, v, o
        + 4 * length * length * d  # QK^T and PV
        + 2 * length * 2 * d * d  # cross-attention q, o
        + 4 * length * TEXT_ROWS * d  # cross-attention scores and weighted sum
        + 2 * length * 2 * d * cfg.ffn_dim  # feed-forward
    )


def model_rows(cfg: DiTConfig, tflops: float) -> list[Row]:
    rate = tflops * 1e12
    rows = []
    for frames in CLIPS:
        length = sequence_length(frames)
        for p in GPU_COUNTS:
            local = -(-length // p)  # rows per GPU after padding
            compute_s = layer_flops(cfg, length) / p / rate
            shard_bytes = local * cfg.dim * BF16
            ulysses = 4 * shard_bytes * (p - 1) / p
            ring = 2 * shard_bytes * (p - 1)
            block_attention_s = 4 * local * local * cfg.dim / rate
            block_transfer_bytes = 2 * shard_bytes
            for strategy, sent in (("ulysses", ulysses), ("ring", ring)):
                times = {name: sent / (gb * 1e9) for name, gb in LINKS_GB_S.items()}
                if strategy == "ulysses":
                    # Not overlapped: "hidden" here means under 5% of the layer.
                    hidden = {name: t < 0.05 * compute_s for name, t in times.items()}
                else:
                    hidden = {name: block_transfer_bytes / (gb * 1e9) <= block_attention_s
                              for name, gb in LINKS_GB_S.items()}
                rows.append(Row(frames, length, p, strategy, sent / 1e6, compute_s * 1e3,
                                {k: t * 1e3 for k, t in times.items()}, hidden))
    return rows


def ring_limits(cfg: DiTConfig, tflops: float) -> dict:
    """Largest ring degree whose transfers still hide behind attention, per clip and link."""
    rate = tflops * 1e12
    # Transfer 4*(L/P)*d bytes vs attention 4*(L/P)^2*d FLOPs: hides while L/P >= rate/bandwidth.
    return {
        f"{frames} frames": {name: int(sequence_length(frames) // (rate / (gb * 1e9))) for name, gb in LINKS_GB_S.items()}
        for frames in CLIPS
    }


def format_table(rows: list[Row], tflops: float, limits: dict) -> str:
    links = "".join(f" {name + ' ms':>10}" for name in LINKS_GB_S)
    lines = [f"per layer, one guidance pass, per GPU; compute at {tflops:g} TFLOP/s sustained",
             f"{'frames':>6} {'tokens':>7} {'GPUs':>4} {'strategy':>8} {'MB sent':>8} {'compute ms':>10}{links}"]
    for r in rows:
        comm = "".join(f" {r.comm_ms[name]:9.2f}{' ' if r.hidden[name] else '!'}" for name in LINKS_GB_S)
        lines.append(f"{r.frames:>6} {r.tokens:>7} {r.gpus:>4} {r.strategy:>8} {r.mbytes_per_gpu:8.1f} "
                     f"{r.compute_ms:10.2f}{comm}")
    lines.append("! = not hidden: Ulysses over 5% of the layer's compute (it is not overlapped); "
                 "ring transfers slower than the attention they overlap")
    lines.append("largest ring degree that still hides: " + "; ".join(
        f"{clip}: " + ", ".join(f"{link} {p}" for link, p in per.items()) for clip, per in limits.items()))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tflops", type=float, default=500.0,
                        help="sustained bf16 TFLOP/s per GPU (H100 SXM: 989 dense peak)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    cfg = DiTConfig.preset("sama-14b")
    rows = model_rows(cfg, args.tflops)
    limits = ring_limits(cfg, args.tflops)
    if args.json:
        print(json.dumps({"tflops": args.tflops, "links_gb_s": LINKS_GB_S, "rows": [asdict(r) for r in rows],
                          "ring_hides_up_to": limits}, indent=2))
    else:
        print(format_table(rows, args.tflops, limits))
    return 0


if __name__ == "__main__":
    sys.exit(main())
