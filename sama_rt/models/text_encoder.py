"""The umT5-XXL encoder that turns prompts into the DiT's text context.

Same computation and key names as the released `models_t5_umt5-xxl-enc-bf16.pth`:
pre-norm blocks of relative-position self-attention (no 1/sqrt(d) scaling, a bucketed
position bias per layer) and a gated GELU-tanh feed-forward, T5 RMS norms, a final norm.

Two outputs matter. `encode_raw` is the encoder's own output over the whole padded
sequence. `forward` is what the DiT receives: the same rows for the real tokens and zeros
from each prompt's length on.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import CheckpointIndex, assign_weights

if TYPE_CHECKING:
    from .tokenizer import PromptTokenizer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextEncoderConfig:
    """Sizes of a umT5 encoder. Defaults are umT5-XXL, the encoder SAMA-14B uses."""

    vocab: int = 256384
    dim: int = 4096
    dim_attn: int = 4096
    dim_ffn: int = 10240
    num_heads: int = 64
    num_layers: int = 24
    num_buckets: int = 32
    max_distance: int = 128
    eps: float = 1e-6

    def __post_init__(self) -> None:
        for name in ("vocab", "dim", "dim_attn", "dim_ffn", "num_heads", "num_layers", "num_buckets", "max_distance"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"TextEncoderConfig.{name} must be a positive int, got {value!r}")
        if self.dim_attn % self.num_heads:
            raise ValueError(f"dim_attn {self.dim_attn} is not divisible by num_heads {self.num_heads}")
        # Bidirectional buckets: half for keys before the query, half for keys after it;
        # each half keeps its first quarter-of-total buckets for exact small distances.
        if self.num_buckets % 4:
            raise ValueError(f"num_buckets must be a multiple of 4, got {self.num_buckets}")
        if self.max_distance <= self.num_buckets // 4:
            raise ValueError(
                f"max_distance {self.max_distance} must exceed the exact range {self.num_buckets // 4}"
            )
        if not self.eps > 0:
            raise ValueError(f"eps must be positive, got {self.eps!r}")

    @property
    def head_dim(self) -> int:
        return self.dim_attn // self.num_heads

    @classmethod
    def preset(cls, name: str) -> "TextEncoderConfig":
        try:
            return _PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown text encoder preset {name!r}; valid: {sorted(_PRESETS)}") from None

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TextEncoderConfig":
        """Config from a dict such as the golden json's "config".

        `shared_pos` is accepted only as False: umT5 has a position bias per layer, and a
        model sharing one table across layers has different keys and behaviour.
        """
        values = dict(values)
        shared_pos = values.pop("shared_pos", False)
        if shared_pos:
            raise ValueError("shared_pos=True (one position table for all layers) is not umT5; only False is supported")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown text encoder config key(s) {unknown}; valid: {sorted(known | {'shared_pos'})}")
        return cls(**values)

    @classmethod
    def from_state_dict(
        cls, shapes: Mapping[str, Any], num_heads: Optional[int] = None
    ) -> "TextEncoderConfig":
        """Infer the sizes from tensor shapes (values: shapes or tensors).

        Unlike most models, the head count is recorded: each layer's position table is
        [num_buckets, num_heads]. `num_heads`, when given, must agree with it.
        """
        dims = {k: tuple(v.shape if hasattr(v, "shape") else v) for k, v in shapes.items()}
        if "pos_embedding.embedding.weight" in dims:
            raise ValueError(
                "checkpoint has one shared position table (pos_embedding.embedding.weight): "
                "not a umT5 encoder, whose tables are per layer"
            )
        required = (
            "token_embedding.weight",
            "blocks.0.attn.q.weight",
            "blocks.0.ffn.fc1.weight",
            "blocks.0.pos_embedding.embedding.weight",
        )
        absent = [k for k in required if k not in dims]
        if absent:
            raise ValueError(f"cannot infer a text encoder config: key(s) {absent} not in the checkpoint")
        vocab, dim = dims["token_embedding.weight"]
        dim_attn = dims["blocks.0.attn.q.weight"][0]
        dim_ffn = dims["blocks.0.ffn.fc1.weight"][0]
        num_buckets, heads_in_table = dims["blocks.0.pos_embedding.embedding.weight"]
        if num_heads is not None and num_heads != heads_in_table:
            raise ValueError(
                f"num_heads={num_heads} disagrees with the checkpoint's position tables, "
                f"which have {heads_in_table} heads"
            )
        layers = {int(k.split(".")[1]) for k in dims if k.startswith("blocks.") and k.split(".")[1].isdigit()}
        if layers != set(range(len(layers))):
            raise ValueError(f"checkpoint block indices are not contiguous from 0: {sorted(layers)}")
        return cls(
            vocab=vocab,
            dim=dim,
            dim_attn=dim_attn,
            dim_ffn=dim_ffn,
            num_heads=heads_in_table,
            num_layers=len(layers),
            num_buckets=num_buckets,
        )


_PRESETS = {
    "sama-14b": TextEncoderConfig(),
    # The golden test model (shared/golden/tiny_t5.json).
    "tiny": TextEncoderConfig(vocab=512, dim=64, dim_attn=64, dim_ffn=160, num_heads=4, num_layers=2),
}


# -- building blocks -------------------------------------------------------------------
class T5RMSNorm(nn.Module):
    """Scale by the root mean square (no mean subtraction, no bias), computed in float32."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        # Rounded to the weight's dtype before the scale, as in the release (bf16 weights
        # give a bf16 product; float32 weights keep everything float32).
        return self.weight * normed.to(self.weight.dtype)


@lru_cache(maxsize=16)
def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> torch.Tensor:
    """Bucket index [length, length] (int64, CPU) of key j relative to query i.

    Keys after the query use the upper half of the buckets. Within a half, distances below
    a quarter of `num_buckets` get their own bucket; larger ones share buckets spaced
    logarithmically up to `max_distance`, beyond which all fall in the last bucket.
    Computed on the CPU in float32 with the release's formula, so the rounding at bucket
    edges is the same on every device (float64 gives the same table for lengths < 600).
    Cached: the caller must not modify the result.
    """
    half = num_buckets // 2
    exact = half // 2
    positions = torch.arange(length, device="cpu")
    rel = positions[None, :] - positions[:, None]
    upper = (rel > 0).long() * half
    distance = rel.abs()
    # Clamp below at `exact` only to keep log() finite; those entries take the exact branch.
    far = exact + (
        torch.log(distance.clamp(min=exact).float() / exact) / math.log(max_distance / exact) * (half - exact)
    ).long()
    far = far.clamp(max=half - 1)
    return upper + torch.where(distance < exact, distance, far)


class RelativePositionBias(nn.Module):
    """Per-head additive attention bias from a learned table of position buckets."""

    def __init__(self, num_buckets: int, num_heads: int, max_distance: int):
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.embedding = nn.Embedding(num_buckets, num_heads)

    def forward(self, length: int) -> torch.Tensor:
        """[1, heads, length, length] in the table's dtype."""
        buckets = relative_position_buckets(length, self.num_buckets, self.max_distance)
        bias = self.embedding(buckets.to(self.embedding.weight.device))
        return bias.permute(2, 0, 1).unsqueeze(0)


class T5SelfAttention(nn.Module):
    """Multi-head self-attention without softmax scaling (T5 folds it into the weights)."""

    def __init__(self, dim: int, dim_attn: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim_attn, bias=False)
        self.k = nn.Linear(dim, dim_attn, bias=False)
        self.v = nn.Linear(dim, dim_attn, bias=False)
        self.o = nn.Linear(dim_attn, dim, bias=False)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x [B, L, dim]; bias [B or 1, heads, L, L] (position bias with the key mask folded in)."""
        b, length, _ = x.shape
        q, k, v = (proj(x).view(b, length, self.num_heads, -1).transpose(1, 2) for proj in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)
        return self.o(out.transpose(1, 2).reshape(b, length, -1))


class GatedFeedForward(nn.Module):
    """fc2(fc1(x) * gelu_tanh(gate(x))); `gate` is a Sequential so its key is `gate.0`."""

    def __init__(self, dim: int, dim_ffn: int):
        super().__init__()
        self.gate = nn.Sequential(nn.Linear(dim, dim_ffn, bias=False), nn.GELU(approximate="tanh"))
        self.fc1 = nn.Linear(dim, dim_ffn, bias=False)
        self.fc2 = nn.Linear(dim_ffn, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x) * self.gate(x))


class T5EncoderBlock(nn.Module):
    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.norm1 = T5RMSNorm(config.dim, config.eps)
        self.attn = T5SelfAttention(config.dim, config.dim_attn, config.num_heads)
        self.norm2 = T5RMSNorm(config.dim, config.eps)
        self.ffn = GatedFeedForward(config.dim, config.dim_ffn)
        self.pos_embedding = RelativePositionBias(config.num_buckets, config.num_heads, config.max_distance)

    def forward(self, x: torch.Tensor, key_mask_bias: torch.Tensor) -> torch.Tensor:
        bias = self.pos_embedding(x.shape[1]).to(x.dtype) + key_mask_bias
        x = _clamp_fp16(x + self.attn(self.norm1(x), bias))
        return _clamp_fp16(x + self.ffn(self.norm2(x)))


def _clamp_fp16(x: torch.Tensor) -> torch.Tensor:
    # umT5 activations can exceed the float16 range; the release clamps them (only when an
    # inf appears, which needs a host sync; clamping always is the same for finite values
    # below max - 1000). bf16 and float32 are left alone.
    if x.dtype != torch.float16:
        return x
    limit = torch.finfo(torch.float16).max - 1000
    return x.clamp(-limit, limit)


# -- the encoder -----------------------------------------------------------------------
class UMT5Encoder(nn.Module):
    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab, config.dim)
        self.blocks = nn.ModuleList(T5EncoderBlock(config) for _ in range(config.num_layers))
        self.norm = T5RMSNorm(config.dim, config.eps)

    @property
    def dtype(self) -> torch.dtype:
        return self.token_embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.token_embedding.weight.device

    def encode_raw(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The encoder output [B, L, dim] over every position, padding included.

        Padding keys (mask 0) get zero attention weight; padding queries still attend to
        the real tokens, so their rows are not zero.
        """
        _check_inputs(ids, mask)
        x = self.token_embedding(ids.to(self.device, torch.long))
        # The release writes the dtype's lowest finite value over masked logits (not -inf),
        # so exp() is exactly 0 for them and a fully masked row would stay finite.
        key_mask_bias = torch.zeros(mask.shape, dtype=x.dtype, device=x.device)
        key_mask_bias.masked_fill_(mask.to(x.device) == 0, torch.finfo(x.dtype).min)
        key_mask_bias = key_mask_bias[:, None, None, :]
        for block in self.blocks:
            x = block(x, key_mask_bias)
        return self.norm(x)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The DiT's context [B, L, dim]: encoder rows of real tokens, zeros after each length.

        Masks must be right-padded (ones, then zeros). The real rows do not depend on the
        padding (its keys get zero weight and the position bias depends only on j - i), so
        the encoder runs only up to the longest prompt and the rest is zero-filled: the
        same result as `encode_raw` on all L positions, for a fraction of the work.
        """
        _check_inputs(ids, mask)
        length = ids.shape[1]
        lengths = mask.ne(0).sum(dim=1)
        prefix = torch.arange(length, device=mask.device)[None, :] < lengths[:, None]
        if not torch.equal(mask.ne(0), prefix):
            raise ValueError("mask must be right-padded: ones for the real tokens, then zeros")
        longest = int(lengths.max()) if lengths.numel() else 0
        context = torch.zeros(ids.shape[0], length, self.config.dim, dtype=self.dtype, device=self.device)
        if longest == 0:
            return context
        real = self.encode_raw(ids[:, :longest], mask[:, :longest])
        keep = prefix[:, :longest, None].to(real.device)
        context[:, :longest] = torch.where(keep, real, torch.zeros((), dtype=real.dtype, device=real.device))
        return context


def _check_inputs(ids: torch.Tensor, mask: torch.Tensor) -> None:
    if ids.ndim != 2 or ids.shape != mask.shape:
        raise ValueError(f"ids and mask must both be [B, L]; got {tuple(ids.shape)} and {tuple(mask.shape)}")
    if ids.dtype.is_floating_point:
        raise ValueError(f"ids must be integer token ids, got {ids.dtype}")


# -- loading and convenience -----------------------------------------------------------
def load_text_encoder(
    path: Union[str, Path, Sequence[Union[str, Path]]],
    config: Optional[TextEncoderConfig] = None,
    *,
    dtype: torch.dtype = torch.bfloat16,
    device: Union[str, torch.device] = "cpu",
) -> UMT5Encoder:
    """Load the encoder strictly from a `.pth` state dict or `.safetensors` file.

    Without `config`, the sizes are read from the tensor shapes. The model is built on the
    meta device and every parameter is assigned from the memory-mapped file, so the
    weights exist once, in `dtype` (the release runs bf16).
    """
    index = CheckpointIndex(path)
    if config is None:
        config = TextEncoderConfig.from_state_dict(index.shapes())
    logger.info("text encoder %s: %s", ", ".join(map(str, index.files())), config)
    with torch.device("meta"):
        encoder = UMT5Encoder(config)
    assign_weights(encoder, index, dtype=dtype, device=device)
    return encoder.requires_grad_(False)


@torch.no_grad()
def encode_prompts(
    tokenizer: "PromptTokenizer",
    encoder: UMT5Encoder,
    prompts: Union[str, Sequence[str]],
    max_length: int = 512,
) -> torch.Tensor:
    """Context [B, max_length, dim] for prompts, as the DiT receives it."""
    ids, mask = tokenizer(prompts, max_length=max_length)
    return encoder(ids.to(encoder.device), mask.to(encoder.device))
