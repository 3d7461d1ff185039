"""Which rows of `[source N | anchors A | target N]` each sequence shard holds.

The sequence is padded at its end to a multiple of the shard count and cut into equal
contiguous shards, so any length shards (81 frames at 480p: 65,585 rows). Every operation
of a DiT block except self-attention is row-wise, so it runs on a shard unchanged; padded
rows are zeros, computed like any row and never read: self-attention drops them from the
keys (`valid_rows`), and the predictions keep only the real rows. The anchors are ordinary
rows here (zero RoPE rows make their q and k zero, as in the one-process model).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class ShardLayout:
    length: int  # real rows of the sequence
    shards: int

    def __post_init__(self):
        if self.length < 1 or self.shards < 1:
            raise ValueError(f"need length >= 1 and shards >= 1, got {self.length} and {self.shards}")

    @property
    def shard_length(self) -> int:
        return -(-self.length // self.shards)

    @property
    def padded_length(self) -> int:
        return self.shard_length * self.shards

    def bounds(self, index: int) -> tuple[int, int]:
        """[start, end) of shard `index` in the padded sequence."""
        return index * self.shard_length, (index + 1) * self.shard_length

    def valid_rows(self, start: int, count: int) -> int:
        """Real rows among `count` padded-sequence rows starting at `start`."""
        return max(0, min(count, self.length - start))

    def take(self, segments: Sequence[torch.Tensor], index: int, dim: int = 1) -> torch.Tensor:
        """Rows of shard `index` from the sequence `cat(segments, dim)`, zero-padded.

        Only the overlapping pieces of each segment are copied: the full sequence is never built.
        """
        start, end = self.bounds(index)
        pieces, offset = [], 0
        for seg in segments:
            n = seg.shape[dim]
            lo, hi = max(start, offset), min(end, offset + n)
            if lo < hi:
                pieces.append(seg.narrow(dim, lo - offset, hi - lo))
            offset += n
        if offset != self.length:
            raise ValueError(f"segments hold {offset} rows, the layout {self.length}")
        pad = end - max(start, min(end, self.length))
        if pad:
            shape = list(segments[0].shape)
            shape[dim] = pad
            pieces.append(segments[0].new_zeros(shape))
        return torch.cat(pieces, dim=dim)
