"""The SAMA DiT: Wan2.1-T2V with SAMA's segment embedding and semantic (anchor) branch.

One forward runs one sequence `[source tokens | semantic anchors | target tokens]`; see
shared SAMA.md for the exact computation. Parameter names are those of the released
Wan2.1 / SAMA checkpoints, so the files load strictly into this module.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .attention import AttentionBackend, anchor_self_attention, sdpa_attention
from .rope import rope_tables

NUM_SEGMENTS = 3  # 0 source, 1 semantic anchors, 2 target
SEGMENT_SOURCE, SEGMENT_SEMANTIC, SEGMENT_TARGET = 0, 1, 2
WAN_HEAD_DIM = 128  # every Wan2.1 release uses head_dim 128; no tensor shape records it


@dataclass(frozen=True)
class DiTConfig:
    dim: int = 5120
    ffn_dim: int = 13824
    num_heads: int = 40
    num_layers: int = 40
    in_dim: int = 16
    out_dim: int = 16
    text_dim: int = 4096
    freq_dim: int = 256
    patch_size: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6
    siglip_dim: int = 1152
    siglip_hidden: int = 1024

    def __post_init__(self):
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if len(self.patch_size) != 3:
            raise ValueError(f"patch_size must have 3 entries, got {self.patch_size}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @classmethod
    def preset(cls, name: str) -> "DiTConfig":
        try:
            return PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown DiT preset {name!r}; valid: {', '.join(PRESETS)}") from None

    @classmethod
    def from_dict(cls, d: Mapping) -> "DiTConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown DiTConfig keys: {sorted(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state_dict(
        cls, shapes: Mapping[str, Sequence[int]], num_heads: Optional[int] = None
    ) -> "DiTConfig":
        """Infer the sizes from tensor shapes (a state dict or {key: shape})."""
        shapes = {k: tuple(getattr(v, "shape", v)) for k, v in shapes.items()}
        need = [
            "patch_embedding.weight", "blocks.0.ffn.0.weight", "text_embedding.0.weight",
            "time_embedding.0.weight", "head.head.weight", "siglip_feat_mlp.fc1.weight",
        ]
        missing = [k for k in need if k not in shapes]
        if missing:
            raise ValueError(f"cannot infer the DiT config: keys missing from the checkpoint: {missing}")
        dim, in_dim, *patch = shapes["patch_embedding.weight"]
        layers = 1 + max(int(k.split(".")[1]) for k in shapes if k.startswith("blocks."))
        head_out = shapes["head.head.weight"][0]
        return cls(
            dim=dim,
            ffn_dim=shapes["blocks.0.ffn.0.weight"][0],
            num_heads=num_heads if num_heads is not None else dim // WAN_HEAD_DIM,
            num_layers=layers,
            in_dim=in_dim,
            out_dim=head_out // math.prod(patch),
            text_dim=shapes["text_embedding.0.weight"][1],
            freq_dim=shapes["time_embedding.0.weight"][1],
            patch_size=tuple(patch),
            siglip_dim=shapes["siglip_feat_mlp.fc1.weight"][1],
            siglip_hidden=shapes["siglip_feat_mlp.fc1.weight"][0],
        )


PRESETS = {
    "sama-14b": DiTConfig(),
    # Same architecture as the golden tensors (head_dim 48, text_dim of the tiny umT5).
    "tiny": DiTConfig(dim=96, ffn_dim=192, num_heads=2, num_layers=2, text_dim=64),
    # Big enough that a CPU step takes seconds; real head_dim 128.
    "medium": DiTConfig(dim=1024, ffn_dim=2816, num_heads=8, num_layers=8, text_dim=64),
}


# -- building blocks -------------------------------------------------------------------
def layer_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm without affine, computed in float32."""
    return F.layer_norm(x.float(), (x.shape[-1],), eps=eps)


# The per-token elementwise work around the matmuls moves the whole [B, L, dim] activation
# through memory once per operation; on a GPU at 480p that traffic is a real share of a
# step. The helpers below do the same float32 arithmetic as the spelled-out formulas with
# fewer passes (one addcmul for a multiply-add; bf16 operands promoted inside the kernel
# instead of copied to float32 first). No `out=`: torch.export refuses it.
def modulated_norm(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float,
                   dtype: torch.dtype) -> torch.Tensor:
    """(LayerNorm(x) * (1 + scale) + shift) in float32, rounded to `dtype`."""
    return torch.addcmul(shift, layer_norm(x, eps), 1 + scale).to(dtype)


def gated_residual(x: torch.Tensor, gate: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x + gate * y in float32 (x, gate float32; y in the model dtype, promoted in-kernel)."""
    return torch.addcmul(x, gate, y)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # As released: normalise in float32, round to the activation dtype, then scale.
        # F.rms_norm computes that (upcast, x * rsqrt(mean(x^2) + eps), cast back, times the
        # weight: bit-identical here on CPU); where torch has a fused kernel for it, it runs
        # in one pass, whose rounding may differ from the spelled-out order by one bf16 ulp.
        return F.rms_norm(x, (x.shape[-1],), self.weight.to(x.dtype), self.eps)


class AffineLayerNorm(nn.LayerNorm):
    """LayerNorm with affine parameters, computed in float32 whatever the weight dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(
            x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps
        )


class Projections(nn.Module):
    """q, k, v, o projections with RMS-normed q and k: the parameters of both attentions."""

    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q = RMSNorm(dim, eps)
        self.norm_k = RMSNorm(dim, eps)


class SelfAttention(Projections):
    def forward(self, x, cos, sin, num_anchor: int, backend: AttentionBackend):
        heads = (self.num_heads, -1)
        q = self.norm_q(self.q(x)).unflatten(-1, heads)
        k = self.norm_k(self.k(x)).unflatten(-1, heads)
        v = self.v(x).unflatten(-1, heads)
        out = anchor_self_attention(q, k, v, cos, sin, num_anchor, backend)
        return self.o(out.flatten(-2))


class CrossAttention(Projections):
    def context_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the text context: constant across denoising steps."""
        heads = (self.num_heads, -1)
        return self.norm_k(self.k(context)).unflatten(-1, heads), self.v(context).unflatten(-1, heads)

    def forward(self, x, context_kv: tuple[torch.Tensor, torch.Tensor], bias: Optional[torch.Tensor] = None):
        """bias: optional additive logit bias [B, 1, 1, keys] (see guided.collapse_context)."""
        k, v = context_kv
        q = self.norm_q(self.q(x)).unflatten(-1, (self.num_heads, -1))
        return self.o(sdpa_attention(q, k, v, bias).flatten(-2))


class DiTBlock(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.eps = cfg.eps
        self.self_attn = SelfAttention(cfg.dim, cfg.num_heads, cfg.eps)
        self.cross_attn = CrossAttention(cfg.dim, cfg.num_heads, cfg.eps)
        self.norm3 = AffineLayerNorm(cfg.dim, eps=cfg.eps)
        self.ffn = nn.Sequential(
            nn.Linear(cfg.dim, cfg.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.ffn_dim, cfg.dim)
        )
        self.modulation = nn.Parameter(torch.zeros(1, 6, cfg.dim))

    def forward(self, x, t_mod, context_kv, cos, sin, num_anchor: int, backend: AttentionBackend,
                context_bias: Optional[torch.Tensor] = None):
        """x: float32 residual stream [B, L, dim]; t_mod: float32 [B or 1, 6, dim]."""
        x = self.self_attention_residual(x, t_mod, cos, sin, num_anchor, backend)
        return self.context_and_ffn_residual(x, t_mod, context_kv, context_bias)

    def _modulation(self, t_mod: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (self.modulation.float() + t_mod).unsqueeze(2).unbind(1)

    def self_attention_residual(self, x, t_mod, cos, sin, num_anchor: int, backend) -> torch.Tensor:
        """x + gate * SelfAttn(modulated LN(x)): the part of the block that sees no text."""
        shift_msa, scale_msa, gate_msa = self._modulation(t_mod)[:3]
        h = modulated_norm(x, shift_msa, scale_msa, self.eps, self.modulation.dtype)
        return gated_residual(x, gate_msa, self.self_attn(h, cos, sin, num_anchor, backend))

    def context_and_ffn_residual(self, x, t_mod, context_kv, context_bias=None) -> torch.Tensor:
        """Cross-attention to the text, then the gated feed-forward."""
        dtype = self.modulation.dtype
        shift_ffn, scale_ffn, gate_ffn = self._modulation(t_mod)[3:]
        x = x + self.cross_attn(self.norm3(x).to(dtype), context_kv, context_bias)
        h = modulated_norm(x, shift_ffn, scale_ffn, self.eps, dtype)
        return gated_residual(x, gate_ffn, self.ffn(h))


class Head(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.eps = cfg.eps
        self.head = nn.Linear(cfg.dim, cfg.out_dim * math.prod(cfg.patch_size))
        self.modulation = nn.Parameter(torch.zeros(1, 2, cfg.dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # Modulated by the time embedding t itself (not t_mod); shift first, then scale.
        shift, scale = (self.modulation.float() + t.unsqueeze(1)).unsqueeze(2).unbind(1)
        h = layer_norm(x, self.eps) * (1 + scale) + shift
        return self.head(h.to(self.head.weight.dtype))


class SiglipFeatMLP(nn.Module):
    """Projects semantic latents [B, A, 1152] into the DiT width."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.norm = AffineLayerNorm(cfg.siglip_dim, eps=1e-6)
        self.fc1 = nn.Linear(cfg.siglip_dim, cfg.siglip_hidden)
        self.fc2 = nn.Linear(cfg.siglip_hidden, cfg.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.fc1.weight.dtype
        return self.fc2(F.gelu(self.fc1(self.norm(x).to(dtype))))


class SemanticHead(nn.Module):
    """Predicts the semantic-latent velocity from the anchors' final hidden states."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.norm = AffineLayerNorm(cfg.dim, eps=1e-6)
        self.proj = nn.Linear(cfg.dim, cfg.siglip_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(x).to(self.proj.weight.dtype))


def sinusoid_embedding(dim: int, timestep: torch.Tensor) -> torch.Tensor:
    """[cos | sin] of t * 10000^(-i/(dim/2)), computed in float64 as released; float32 out."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=timestep.device) / half)
    angles = torch.outer(timestep.to(torch.float64), freqs)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1).float()


# -- the model ---------------------------------------------------------------------------
class SamaDiT(nn.Module):
    def __init__(self, cfg: DiTConfig, attention: Union[str, AttentionBackend] = AttentionBackend.SDPA):
        super().__init__()
        self.config = cfg
        self.attention = AttentionBackend.parse(attention)
        self.patch_embedding = nn.Conv3d(cfg.in_dim, cfg.dim, cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(
            nn.Linear(cfg.text_dim, cfg.dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.dim, cfg.dim)
        )
        self.time_embedding = nn.Sequential(
            nn.Linear(cfg.freq_dim, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim)
        )
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(cfg.dim, 6 * cfg.dim))
        self.segment_embedding = nn.Embedding(NUM_SEGMENTS, cfg.dim)
        self.siglip_feat_mlp = SiglipFeatMLP(cfg)
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.num_layers))
        self.head = Head(cfg)
        self.semantic_head = SemanticHead(cfg)

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.patch_embedding.weight.device

    def with_attention(self, backend: Union[str, AttentionBackend]) -> "SamaDiT":
        self.attention = AttentionBackend.parse(backend)
        return self

    # -- pieces, each usable on its own (the fast path caches the constant ones) --------
    def embed_time(self, timestep: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Time embedding t [B, dim] and block modulation t_mod [B, 6, dim], float32.

        The released pipeline casts the timestep to the model dtype before the sinusoid, so
        a bf16 model sees rounded timesteps (909.09 -> 908); the weights were trained that
        way, so the same rounding happens here.
        """
        timestep = torch.as_tensor(timestep, device=self.device).reshape(-1).to(self.dtype)
        timestep = timestep.expand(batch) if timestep.numel() == 1 else timestep
        dtype = self.dtype
        t = self.time_embedding(sinusoid_embedding(self.config.freq_dim, timestep).to(dtype)).float()
        t_mod = self.time_projection(t.to(dtype)).float().unflatten(1, (6, self.config.dim))
        return t, t_mod

    def embed_context(self, context: torch.Tensor) -> torch.Tensor:
        return self.text_embedding(context.to(self.dtype))

    def context_kv(self, context_embedded: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [block.cross_attn.context_kv(context_embedded) for block in self.blocks]

    def patchify(self, latents: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        x = self.patch_embedding(latents.to(self.dtype))
        grid = tuple(x.shape[2:])
        return x.flatten(2).transpose(1, 2), grid

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        f, h, w = grid
        pf, ph, pw = self.config.patch_size
        c = self.config.out_dim
        x = x.reshape(x.shape[0], f, h, w, pf, ph, pw, c)
        return x.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(x.shape[0], c, f * pf, h * ph, w * pw)

    def embed_sequence(
        self, latents: torch.Tensor, source_latents: torch.Tensor, semantic_latents: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """[source | semantic | target] tokens with segment embeddings, float32."""
        target, grid = self.patchify(latents)
        source, source_grid = self.patchify(source_latents)
        if source_grid != grid:
            raise ValueError(f"source latents grid {source_grid} differs from target grid {grid}")
        semantic = self.siglip_feat_mlp(semantic_latents)
        seg = self.segment_embedding.weight.float()
        x = torch.cat(
            [source.float() + seg[SEGMENT_SOURCE], semantic.float() + seg[SEGMENT_SEMANTIC],
             target.float() + seg[SEGMENT_TARGET]],
            dim=1,
        )
        return x, grid

    def run_blocks(self, x, t_mod, context_kv, cos, sin, num_anchor: int, context_bias=None) -> torch.Tensor:
        for block, kv in zip(self.blocks, context_kv):
            x = block(x, t_mod, kv, cos, sin, num_anchor, self.attention, context_bias)
        return x

    def predict(self, x, t, grid, num_anchor: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Split the final hidden states into (noise_pred, semantic_pred), float32."""
        n = grid[0] * grid[1] * grid[2]
        semantic_pred = self.semantic_head(x[:, n:n + num_anchor]).float()
        noise_pred = self.unpatchify(self.head(x[:, n + num_anchor:], t).float(), grid)
        return noise_pred, semantic_pred

    def forward(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor,
        source_latents: torch.Tensor,
        semantic_latents: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """latents/source_latents [B,16,F,H,W], timestep [] or [B], context [B,512,text_dim],
        semantic_latents [B,A,1152] -> (noise_pred [B,16,F,H,W], semantic_pred [B,A,1152]), float32."""
        _check_inputs(self.config, latents, context, source_latents, semantic_latents)
        batch = latents.shape[0]
        t, t_mod = self.embed_time(timestep, batch)
        kv = self.context_kv(self.embed_context(context))
        x, grid = self.embed_sequence(latents, source_latents, semantic_latents)
        cos, sin = rope_tables(*grid, self.config.head_dim, device=x.device)
        num_anchor = semantic_latents.shape[1]
        x = self.run_blocks(x, t_mod, kv, cos, sin, num_anchor)
        return self.predict(x, t, grid, num_anchor)


def _check_inputs(cfg: DiTConfig, latents, context, source_latents, semantic_latents) -> None:
    if latents.dim() != 5 or latents.shape[1] != cfg.in_dim:
        raise ValueError(f"latents must be [B,{cfg.in_dim},F,H,W], got {list(latents.shape)}")
    if source_latents.shape != latents.shape:
        raise ValueError(
            f"source_latents {list(source_latents.shape)} must match latents {list(latents.shape)}"
        )
    _, _, _, h, w = latents.shape
    pf, ph, pw = cfg.patch_size
    if h % ph or w % pw or latents.shape[2] % pf:
        raise ValueError(f"latent size {list(latents.shape[2:])} is not divisible by patch {cfg.patch_size}")
    if context.dim() != 3 or context.shape[-1] != cfg.text_dim:
        raise ValueError(f"context must be [B,L,{cfg.text_dim}], got {list(context.shape)}")
    if semantic_latents.dim() != 3 or semantic_latents.shape[-1] != cfg.siglip_dim:
        raise ValueError(f"semantic_latents must be [B,A,{cfg.siglip_dim}], got {list(semantic_latents.shape)}")
    for name, t in (("context", context), ("semantic_latents", semantic_latents)):
        if t.shape[0] != latents.shape[0]:
            raise ValueError(f"{name} batch {t.shape[0]} != latents batch {latents.shape[0]}")


def build_dit(cfg: DiTConfig, dtype=torch.float32, device="cpu", seed: Optional[int] = None) -> SamaDiT:
    """A DiT with seeded random weights (demo, tests, benchmarks without a checkpoint)."""
    from .random_weights import init_random_weights

    with torch.device("meta"):
        model = SamaDiT(cfg)
    return init_random_weights(model, seed=0 if seed is None else seed, dtype=dtype, device=device)


def load_dit(
    paths,
    config: Union[DiTConfig, str, None] = None,
    dtype: torch.dtype = torch.bfloat16,
    device="cpu",
    num_heads: Optional[int] = None,
) -> SamaDiT:
    """Load the SAMA DiT strictly from one or more checkpoints.

    paths: a .safetensors file, a Wan2.1 directory with a *.safetensors.index.json, or a
    list of them; later entries override earlier ones (Wan2.1 base first, SAMA second).
    config: a DiTConfig, a preset name, or None to infer the sizes from the tensor shapes.
    """
    from .checkpoint import CheckpointIndex, assign_weights

    index = CheckpointIndex(paths)
    if config is None:
        config = DiTConfig.from_state_dict(index.shapes(), num_heads=num_heads)
    elif isinstance(config, str):
        config = DiTConfig.preset(config)
    with torch.device("meta"):
        model = SamaDiT(config)
    return assign_weights(model, index, dtype=dtype, device=device)
