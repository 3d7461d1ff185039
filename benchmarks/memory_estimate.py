"""Device memory of one denoising step at real sizes, estimated without a GPU.

    python benchmarks/memory_estimate.py [--config sama-14b] [--frames 49,81] [--json]

The DiT (bf16) and its inputs are fake tensors (shapes and dtypes, no storage), and one
step of the fast path (`GuidedPredictor`, CFG batch 2) runs on them while a dispatch mode
adds up the bytes of the tensors alive after every operation. Reported per shape: the
weights; what one edit keeps for all its steps (cross-attention K/V, source tokens, RoPE
tables); the peak of the step's activations; and the resulting device peaks for the
default mode (all weights resident) and the low-memory mode (two streamed blocks
resident). It counts live tensors only: the CUDA caching allocator's fragmentation, cuBLAS
workspaces and the CUDA context come on top (measure with `sama-rt bench` on a GPU). The
attention runs as SDPA on explicitly rotated q/k here, which holds two rotated copies the
fused Triton kernel does not.
"""
from __future__ import annotations

import argparse
import json
import sys
import weakref
from pathlib import Path

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sama_rt.bench import latent_shape, random_dit_inputs  # noqa: E402
from sama_rt.models import DiTConfig  # noqa: E402
from sama_rt.models.dit import SamaDiT  # noqa: E402

GIB = 2**30


class LiveBytes(TorchDispatchMode):
    """Bytes of the storages that tensors created under this mode keep alive, and their peak.

    A storage is counted once however many views share it, and released when the last
    tensor that was seen holding it is garbage-collected.
    """

    def __init__(self):
        super().__init__()
        self._storages: dict[int, list[int]] = {}  # storage id -> [tensors alive, bytes]
        self.live = 0
        self.peak = 0

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage._cdata
        entry = self._storages.get(key)
        if entry is None:
            entry = self._storages[key] = [0, storage.nbytes()]
            self.live += entry[1]
            self.peak = max(self.peak, self.live)
        entry[0] += 1
        weakref.finalize(t, self._release, key)

    def _release(self, key: int) -> None:
        entry = self._storages.get(key)
        if entry is not None:
            entry[0] -= 1
            if entry[0] == 0:
                self.live -= entry[1]
                del self._storages[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out


def estimate(config: str, frames: int, height: int = 480, width: int = 832) -> dict:
    import sama_rt.guided as guided

    cfg = DiTConfig.preset(config)
    real = random_dit_inputs(cfg, latent_shape(frames, height, width))
    fake = FakeTensorMode(allow_non_fake_inputs=True)
    with fake:
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)  # parameters are created as bf16 fakes
        try:
            dit = SamaDiT(cfg)
        finally:
            torch.set_default_dtype(default)
        source, noise, semantic, context, negative = (fake.from_tensor(t) for t in real)
    weights = sum(p.numel() * p.element_size() for p in dit.parameters())
    block = max(sum(p.numel() * p.element_size() for p in b.parameters()) for b in dit.blocks)
    blocks = sum(sum(p.numel() * p.element_size() for p in b.parameters()) for b in dit.blocks)
    tracker = LiveBytes()
    # Fake tensors have no values to find the prompt's real length in; use the bench's.
    real_length = guided.real_context_length
    guided.real_context_length = lambda ctx: 24
    try:
        with fake, tracker, torch.no_grad():
            predictor = guided.GuidedPredictor(dit, source, context, negative, 5.0)
            per_edit = tracker.live
            predictor(noise, semantic, torch.tensor([900.0]))
    finally:
        guided.real_context_length = real_length
    return {
        "config": config, "frames": frames, "resolution": f"{height}x{width}",
        "weights_gib": weights / GIB, "per_edit_gib": per_edit / GIB, "step_peak_gib": tracker.peak / GIB,
        "default_peak_gib": (weights + tracker.peak) / GIB,
        "low_memory_peak_gib": (weights - blocks + 2 * block + tracker.peak) / GIB,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="sama-14b", choices=["tiny", "medium", "sama-14b"])
    ap.add_argument("--frames", default="49,81")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = [estimate(args.config, int(f)) for f in args.frames.split(",")]
    if args.json:
        print(json.dumps(rows))
        return 0
    print("| config | frames | weights GiB | per edit GiB | step peak GiB | device peak, default | device peak, low-memory |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['frames']} | {r['weights_gib']:.1f} | {r['per_edit_gib']:.2f} | "
              f"{r['step_peak_gib']:.1f} | {r['default_peak_gib']:.1f} | {r['low_memory_peak_gib']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
