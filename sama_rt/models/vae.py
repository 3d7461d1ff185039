"""The Wan2.1 video VAE: causal 3-D conv encoder/decoder with per-chunk temporal caches.

Video [B,3,T,H,W] in [-1,1] with T = 4k+1 maps to normalised latents [B,16,k+1,H/8,W/8]
and back. Both directions run causally over time in chunks: the encoder takes the first
frame alone and then groups of 4 frames, the decoder one latent frame at a time. Every
layer that looks back in time keeps the frames it needs from the previous chunk in a
`CausalCache`, an explicit object passed through the forward calls, so nothing leaks
between calls and a chunk step can be exported with its cache as plain tensor inputs and
outputs (`CausalCache.tensors()` / `CausalCache.from_tensors()`).

Parameter names are the raw inner-model keys of the release (`encoder.*`, `conv1.*`,
`conv2.*`, `decoder.*`), so `Wan2.1_VAE.pth` loads strictly into `WanVAE`.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import CheckpointIndex, assign_weights

logger = logging.getLogger(__name__)

# A 3-tap causal conv needs the two frames before the current chunk.
CACHE_FRAMES = 2

# Per-channel statistics of the release's latents: encode returns (mu - mean) / std and
# decode inverts it. The values are fixed by the release and must not be rounded.
LATENT_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)
LATENT_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)

# Defaults of the SAMA run script, in latent units (pixels = x8).
DEFAULT_TILE_SIZE = (30, 52)
DEFAULT_TILE_STRIDE = (15, 26)


@dataclass(frozen=True)
class VAEConfig:
    dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple[float, ...] = ()
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    dropout: float = 0.0  # training only; inference runs the model in eval mode

    def __post_init__(self):
        object.__setattr__(self, "dim_mult", tuple(int(m) for m in self.dim_mult))
        object.__setattr__(self, "attn_scales", tuple(float(s) for s in self.attn_scales))
        object.__setattr__(self, "temporal_downsample", tuple(bool(t) for t in self.temporal_downsample))
        if self.dim <= 0 or self.num_res_blocks <= 0 or not self.dim_mult:
            raise ValueError(f"invalid VAE sizes: {self}")
        if len(self.temporal_downsample) != len(self.dim_mult) - 1:
            raise ValueError(
                f"temporal_downsample needs one entry per downsampling stage "
                f"({len(self.dim_mult) - 1}), got {self.temporal_downsample}"
            )
        if self.z_dim != len(LATENT_MEAN):
            raise ValueError(
                f"z_dim {self.z_dim}: the latent normalisation constants exist for "
                f"{len(LATENT_MEAN)} channels only"
            )

    @property
    def spatial_factor(self) -> int:
        """Pixels per latent along H and W (8 for the release)."""
        return 2 ** (len(self.dim_mult) - 1)

    @property
    def temporal_factor(self) -> int:
        """Frames per latent frame after the first (4 for the release)."""
        return 2 ** sum(self.temporal_downsample)

    @classmethod
    def preset(cls, name: str) -> "VAEConfig":
        try:
            return PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown VAE preset {name!r}; valid: {', '.join(PRESETS)}") from None

    @classmethod
    def from_dict(cls, d: Mapping) -> "VAEConfig":
        """Build from a dict; accepts the release's spelling `temperal_downsample`."""
        d = dict(d)
        if "temperal_downsample" in d:
            if "temporal_downsample" in d:
                raise ValueError("both temperal_downsample and temporal_downsample given")
            d["temporal_downsample"] = d.pop("temperal_downsample")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown VAEConfig keys: {sorted(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    "sama-14b": VAEConfig(),
    # The architecture of the golden tensors: the release with base width 8.
    "tiny": VAEConfig(dim=8),
}


# -- the temporal cache -----------------------------------------------------------------
class CausalCache:
    """Temporal context a causal encoder or decoder carries from one chunk to the next.

    One slot per layer that looks back in time, in the order the layers run. During a
    chunk every slot is read and then rewritten exactly once (`read` / `write` move a
    cursor that `begin_chunk` resets and `end_chunk` checks). A slot is None until its
    layer has seen a chunk; after the first chunk all slots hold tensors whose shapes
    no longer change, which is what a fixed-signature exported chunk step needs.
    A cache whose chunk raised midway is inconsistent and must be discarded.
    """

    def __init__(self, num_slots: int):
        self.slots: list[Optional[torch.Tensor]] = [None] * num_slots
        self._cursor = 0

    def __len__(self) -> int:
        return len(self.slots)

    @property
    def is_empty(self) -> bool:
        """No chunk has run yet."""
        return all(s is None for s in self.slots)

    @property
    def is_primed(self) -> bool:
        """Every slot holds a tensor (true after the first chunk)."""
        return all(s is not None for s in self.slots)

    def begin_chunk(self) -> None:
        self._cursor = 0

    def end_chunk(self) -> None:
        if self._cursor != len(self.slots):
            raise RuntimeError(
                f"chunk used {self._cursor} of {len(self.slots)} cache slots: "
                "the cache does not belong to this model"
            )

    def read(self) -> Optional[torch.Tensor]:
        """The current slot's context (None before its first chunk)."""
        if self._cursor >= len(self.slots):
            raise RuntimeError(f"cache has only {len(self.slots)} slots: it does not belong to this model")
        return self.slots[self._cursor]

    def write(self, context: torch.Tensor) -> None:
        """Replace the current slot's context and move on to the next slot."""
        self.read()  # bounds check
        self.slots[self._cursor] = context
        self._cursor += 1

    def tensors(self) -> list[torch.Tensor]:
        """The slots as a flat list of tensors (only once primed)."""
        if not self.is_primed:
            raise RuntimeError("the cache has empty slots; run the first chunk before flattening it")
        return list(self.slots)  # type: ignore[arg-type]

    @classmethod
    def from_tensors(cls, tensors: Sequence[torch.Tensor]) -> "CausalCache":
        cache = cls(len(tensors))
        cache.slots = list(tensors)
        return cache


# -- building blocks -----------------------------------------------------------------------
class CausalConv3d(nn.Conv3d):
    """3-D convolution whose output frame t sees input frames <= t only.

    Spatial padding is symmetric; temporal padding (2 * the nominal pad) goes entirely
    before the first frame. With a cache, the frames before the chunk come from the
    previous chunk (zeros before the first), so chunked and whole-sequence runs agree.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0):
        pt, ph, pw = _triple(padding)
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0)
        self.time_pad = 2 * pt
        self.space_pad = (pw, pw, ph, ph)

    def forward(self, x: torch.Tensor, cache: Optional[CausalCache] = None) -> torch.Tensor:
        if self.time_pad:
            past = cache.read() if cache is not None else None
            if past is None:  # no cache, or the first chunk: causal zero padding
                past = x.new_zeros(*x.shape[:2], self.time_pad, *x.shape[3:])
            x = torch.cat([past, x], dim=2)
            if cache is not None:
                # clone: a view would keep the whole concatenated chunk alive.
                cache.write(x[:, :, -self.time_pad:].clone())
        if any(self.space_pad):
            x = F.pad(x, self.space_pad)
        # Exported graphs keep the real Conv3d (what TensorRT and onnxruntime want).
        if x.device.type == "cpu" and not torch.compiler.is_exporting():
            return conv3d_as_conv2d(x, self.weight, self.bias, self.stride)
        return super().forward(x)


def conv3d_as_conv2d(x: torch.Tensor, weight: torch.Tensor, bias, stride) -> torch.Tensor:
    """An unpadded Conv3d written as one Conv2d per temporal tap, summed.

    PyTorch's CPU build runs Conv3d through a slow reference kernel, while Conv2d uses
    oneDNN; on the VAE this is ~5x faster and equal up to float summation order.
    """
    st, sh, sw = stride
    kt = weight.shape[2]
    b, c, t = x.shape[:3]
    t_out = (t - kt) // st + 1
    out = None
    for k in range(kt):
        frames = x[:, :, k: k + st * (t_out - 1) + 1: st]  # [B, C, T_out, H, W]
        frames = frames.transpose(1, 2).reshape(b * t_out, c, *x.shape[3:])
        y = F.conv2d(frames, weight[:, :, k], bias if k == 0 else None, stride=(sh, sw))
        out = y if out is None else out + y
    return out.reshape(b, t_out, *out.shape[1:]).transpose(1, 2)


class RMSNorm(nn.Module):
    """Channel RMS norm written as L2-normalise * sqrt(C) * gamma, as the release does."""

    def __init__(self, dim: int, video: bool):
        super().__init__()
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.ones(dim, *((1, 1, 1) if video else (1, 1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) * self.scale * self.gamma


def _frames(x: torch.Tensor) -> torch.Tensor:
    """[B,C,T,H,W] -> [B*T,C,H,W] for per-frame 2-D layers."""
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


def _video(x: torch.Tensor, t: int) -> torch.Tensor:
    """[B*T,C,H,W] -> [B,C,T,H,W]."""
    bt, c, h, w = x.shape
    return x.reshape(bt // t, t, c, h, w).permute(0, 2, 1, 3, 4)


class NearestUpsample2x(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="nearest-exact")


class ResidualBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, dropout: float):
        super().__init__()
        # Sequential indices are part of the release's key names (residual.2, residual.6).
        self.residual = nn.Sequential(
            RMSNorm(in_dim, video=True), nn.SiLU(), CausalConv3d(in_dim, out_dim, 3, padding=1),
            RMSNorm(out_dim, video=True), nn.SiLU(), nn.Dropout(dropout),
            CausalConv3d(out_dim, out_dim, 3, padding=1),
        )
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        return self.shortcut(x) + _run(self.residual, x, cache)


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame (no temporal context)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = RMSNorm(dim, video=False)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, cache: Optional[CausalCache] = None) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = self.to_qkv(self.norm(_frames(x)))
        q, k, v = y.reshape(b * t, 1, c * 3, h * w).permute(0, 1, 3, 2).contiguous().chunk(3, dim=-1)
        y = F.scaled_dot_product_attention(q, k, v)  # [B*T, 1, H*W, C]
        y = y.squeeze(1).permute(0, 2, 1).reshape(b * t, c, h, w)
        return x + _video(self.proj(y), t)


class Resample(nn.Module):
    """2x spatial down/upsampling, optionally with 2x temporal down/upsampling.

    Temporal resampling leaves the first chunk (the first frame alone) unchanged, so T
    frames map to (T-1)/2+1 and back: every later chunk of 2n frames becomes n (down) or
    every frame becomes 2 (up).
    """

    MODES = ("upsample2d", "upsample3d", "downsample2d", "downsample3d")

    def __init__(self, dim: int, mode: str):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"unknown resample mode {mode!r}; valid: {', '.join(self.MODES)}")
        self.mode = mode
        if mode.startswith("up"):
            self.resample = nn.Sequential(NearestUpsample2x(), nn.Conv2d(dim, dim // 2, 3, padding=1))
            if mode == "upsample3d":
                # Produces the two output frames of each input frame as 2*dim channels.
                self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        else:
            # Pad right/bottom only, so a stride-2 conv halves an even size exactly.
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
            if mode == "downsample3d":
                self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))

    @property
    def owns_cache_slot(self) -> bool:
        # upsample3d's slot is the one its causal time_conv reads and writes.
        return self.mode == "downsample3d"

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        if self.mode == "upsample3d":
            x = self._upsample_time(x, cache)
        t = x.shape[2]
        x = _video(self.resample(_frames(x)), t)
        if self.mode == "downsample3d":
            x = self._downsample_time(x, cache)
        return x

    def _upsample_time(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        if cache.read() is None:
            # First chunk: the first frame is not doubled. Later chunks see zeros before
            # their first frame, exactly as causal zero padding would give.
            cache.write(x.new_zeros(*x.shape[:2], CACHE_FRAMES, *x.shape[3:]))
            return x
        b, c, t, h, w = x.shape
        y = self.time_conv(x, cache)  # [B, 2C, T, H, W]
        # Channel halves are the even and odd output frames: interleave them in time.
        return y.reshape(b, 2, c, t, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b, c, 2 * t, h, w)

    def _downsample_time(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        past = cache.read()
        cache.write(x[:, :, -1:].clone())
        if past is None:
            return x  # first chunk: the first frame passes unchanged
        # The last frame of the previous chunk + this chunk's 2n frames -> n frames.
        return self.time_conv(torch.cat([past, x], dim=2))


_CACHE_AWARE = (CausalConv3d, ResidualBlock, AttentionBlock, Resample)


def _run(layers: nn.Sequential, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
    for layer in layers:
        x = layer(x, cache) if isinstance(layer, _CACHE_AWARE) else layer(x)
    return x


def count_cache_slots(module: nn.Module) -> int:
    """Slots a `CausalCache` needs for `module`: one per temporal conv that pads in time
    (chunk context) plus one per temporal downsampling (its last frame)."""
    n = 0
    for m in module.modules():
        if isinstance(m, CausalConv3d) and m.time_pad:
            n += 1
        elif isinstance(m, Resample) and m.owns_cache_slot:
            n += 1
    return n


class Encoder3d(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        dims = [cfg.dim * m for m in (1,) + cfg.dim_mult]
        self.conv1 = CausalConv3d(3, dims[0], 3, padding=1)
        blocks: list[nn.Module] = []
        scale = 1.0
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResidualBlock(in_dim, out_dim, cfg.dropout))
                if scale in cfg.attn_scales:
                    blocks.append(AttentionBlock(out_dim))
                in_dim = out_dim
            if i != len(cfg.dim_mult) - 1:
                blocks.append(Resample(out_dim, "downsample3d" if cfg.temporal_downsample[i] else "downsample2d"))
                scale /= 2.0
        self.downsamples = nn.Sequential(*blocks)
        top = dims[-1]
        self.middle = nn.Sequential(
            ResidualBlock(top, top, cfg.dropout), AttentionBlock(top), ResidualBlock(top, top, cfg.dropout)
        )
        # 2*z_dim outputs: posterior mean and log-variance.
        self.head = nn.Sequential(
            RMSNorm(top, video=True), nn.SiLU(), CausalConv3d(top, cfg.z_dim * 2, 3, padding=1)
        )

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        x = self.conv1(x, cache)
        x = _run(self.downsamples, x, cache)
        x = _run(self.middle, x, cache)
        return _run(self.head, x, cache)


class Decoder3d(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        mults = cfg.dim_mult
        dims = [cfg.dim * m for m in (mults[-1],) + mults[::-1]]
        temporal_upsample = cfg.temporal_downsample[::-1]
        scale = 1.0 / 2 ** (len(mults) - 2)
        self.conv1 = CausalConv3d(cfg.z_dim, dims[0], 3, padding=1)
        self.middle = nn.Sequential(
            ResidualBlock(dims[0], dims[0], cfg.dropout), AttentionBlock(dims[0]),
            ResidualBlock(dims[0], dims[0], cfg.dropout),
        )
        blocks: list[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            if i > 0:
                in_dim //= 2  # each upsampling conv halves the channels
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResidualBlock(in_dim, out_dim, cfg.dropout))
                if scale in cfg.attn_scales:
                    blocks.append(AttentionBlock(out_dim))
                in_dim = out_dim
            if i != len(mults) - 1:
                blocks.append(Resample(out_dim, "upsample3d" if temporal_upsample[i] else "upsample2d"))
                scale *= 2.0
        self.upsamples = nn.Sequential(*blocks)
        self.head = nn.Sequential(RMSNorm(dims[-1], video=True), nn.SiLU(), CausalConv3d(dims[-1], 3, 3, padding=1))

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        x = self.conv1(x, cache)
        x = _run(self.middle, x, cache)
        x = _run(self.upsamples, x, cache)
        return _run(self.head, x, cache)


# -- the VAE -------------------------------------------------------------------------------
class WanVAE(nn.Module):
    """Encode videos to normalised latents and decode them back (posterior mean, no sampling)."""

    def __init__(self, config: VAEConfig = VAEConfig()):
        super().__init__()
        self.config = config
        z = config.z_dim
        self.encoder = Encoder3d(config)
        self.conv1 = CausalConv3d(z * 2, z * 2, 1)
        self.conv2 = CausalConv3d(z, z, 1)
        self.decoder = Decoder3d(config)

    @property
    def dtype(self) -> torch.dtype:
        return self.conv1.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.conv1.weight.device

    # -- chunk steps (one causal step each; what an exporter traces) ----------------------
    def new_encoder_cache(self) -> CausalCache:
        return CausalCache(count_cache_slots(self.encoder))

    def new_decoder_cache(self) -> CausalCache:
        return CausalCache(count_cache_slots(self.decoder))

    def encode_chunk(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        """Frames of one chunk -> one normalised latent frame [B, z_dim, 1, H/8, W/8].

        The first chunk (empty cache) is the first frame alone; every later chunk holds
        `temporal_factor` (4) frames.
        """
        return self._features_to_latents(self._encoder_step(x, cache))

    def decode_chunk(self, z: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        """One normalised latent frame [B, z_dim, 1, h, w] -> frames [B, 3, n, 8h, 8w],
        n = 1 for the first chunk (empty cache) and `temporal_factor` after. Not clamped:
        tiled decoding blends tiles before clamping."""
        if z.dim() != 5 or z.shape[2] != 1:
            raise ValueError(
                f"decode chunk must be one latent frame [B,{self.config.z_dim},1,h,w], got shape {tuple(z.shape)}"
            )
        return self._decoder_step(self._latents_to_features(z), cache)

    def _encoder_step(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        want = 1 if cache.is_empty else self.config.temporal_factor
        if x.dim() != 5 or x.shape[2] != want:
            raise ValueError(f"encode chunk must be [B,3,{want},H,W] here, got shape {tuple(x.shape)}")
        cache.begin_chunk()
        h = self.encoder(x, cache)
        cache.end_chunk()
        return h

    def _decoder_step(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        cache.begin_chunk()
        out = self.decoder(x, cache)
        cache.end_chunk()
        return out

    def _features_to_latents(self, h: torch.Tensor) -> torch.Tensor:
        """Encoder features (any number of frames) -> normalised posterior mean."""
        mu = self.conv1(h)[:, : self.config.z_dim]
        mean, inv_std = self._latent_stats(mu)
        return (mu - mean) * inv_std

    def _latents_to_features(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents (any number of frames) -> decoder input."""
        mean, inv_std = self._latent_stats(z)
        # Dividing by 1/std (not multiplying by std) reproduces the release bit for bit.
        return self.conv2(z / inv_std + mean)

    def _latent_stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Built in float32 and then cast, so 1/std is rounded once like the release.
        shape = (1, self.config.z_dim, 1, 1, 1)
        mean = torch.tensor(LATENT_MEAN, dtype=torch.float32, device=like.device)
        inv_std = 1.0 / torch.tensor(LATENT_STD, dtype=torch.float32, device=like.device)
        return mean.to(like.dtype).view(shape), inv_std.to(like.dtype).view(shape)

    # -- whole videos ------------------------------------------------------------------------
    @torch.no_grad()
    def encode(
        self,
        video: torch.Tensor,
        tiled: bool = False,
        tile_size: tuple[int, int] = DEFAULT_TILE_SIZE,
        tile_stride: tuple[int, int] = DEFAULT_TILE_STRIDE,
    ) -> torch.Tensor:
        """Video [B,3,T,H,W] in [-1,1], T = 4k+1, H and W multiples of 8 -> normalised
        latents [B, z_dim, k+1, H/8, W/8]. `tile_size` / `tile_stride` are in latent units."""
        self._check_video(video)
        video = video.to(device=self.device, dtype=self.dtype)
        if not tiled:
            return self._encode_whole(video)
        s = self.config.spatial_factor
        return blend_tiles(
            video, self._encode_whole, tile_size, tile_stride,
            in_per_latent=s, out_per_latent=1, grid=(video.shape[3] // s, video.shape[4] // s),
        )

    @torch.no_grad()
    def decode(
        self,
        latents: torch.Tensor,
        tiled: bool = False,
        tile_size: tuple[int, int] = DEFAULT_TILE_SIZE,
        tile_stride: tuple[int, int] = DEFAULT_TILE_STRIDE,
    ) -> torch.Tensor:
        """Normalised latents [B, z_dim, k+1, h, w] -> video [B, 3, 4k+1, 8h, 8w] clamped
        to [-1,1]. `tile_size` / `tile_stride` are in latent units."""
        self._check_latents(latents)
        latents = latents.to(device=self.device, dtype=self.dtype)
        if not tiled:
            video = self._decode_whole(latents)
        else:
            video = blend_tiles(
                latents, self._decode_whole, tile_size, tile_stride,
                in_per_latent=1, out_per_latent=self.config.spatial_factor, grid=tuple(latents.shape[3:]),
            )
        return video.clamp_(-1.0, 1.0)

    # conv1 / conv2 are 1x1x1, so per chunk or per video is the same math; whole videos
    # apply them once to all frames, as the release does, which keeps float32 rounding
    # identical to it at every tile shape.
    def _encode_whole(self, video: torch.Tensor) -> torch.Tensor:
        cache = self.new_encoder_cache()
        step = self.config.temporal_factor
        chunks = [video[:, :, :1]] + [video[:, :, i:i + step] for i in range(1, video.shape[2], step)]
        features = torch.cat([self._encoder_step(c, cache) for c in chunks], dim=2)
        return self._features_to_latents(features)

    def _decode_whole(self, latents: torch.Tensor) -> torch.Tensor:
        cache = self.new_decoder_cache()
        x = self._latents_to_features(latents)
        return torch.cat([self._decoder_step(x[:, :, i:i + 1], cache) for i in range(x.shape[2])], dim=2)

    def _check_video(self, video: torch.Tensor) -> None:
        s, f = self.config.spatial_factor, self.config.temporal_factor
        shape = tuple(video.shape)
        if video.dim() != 5 or shape[1] != 3:
            raise ValueError(f"video must be [B,3,T,H,W], got shape {shape}")
        if not video.is_floating_point():
            raise ValueError(f"video must be floating point in [-1,1], got {video.dtype}")
        t, h, w = shape[2:]
        if t < 1 or (t - 1) % f:
            raise ValueError(f"video frame count must be {f}k+1 (1, {1 + f}, {1 + 2 * f}, ...), got shape {shape}")
        if h < s or w < s or h % s or w % s:
            raise ValueError(f"video height and width must be positive multiples of {s}, got shape {shape}")

    def _check_latents(self, latents: torch.Tensor) -> None:
        shape = tuple(latents.shape)
        if latents.dim() != 5 or shape[1] != self.config.z_dim or min(shape[2:]) < 1:
            raise ValueError(f"latents must be [B,{self.config.z_dim},T,h,w] with T,h,w >= 1, got shape {shape}")
        if not latents.is_floating_point():
            raise ValueError(f"latents must be floating point, got {latents.dtype}")


# -- spatial tiling ------------------------------------------------------------------------
def tile_spans(length: int, size: int, stride: int) -> list[tuple[int, int]]:
    """[start, end) tiles along one axis: starts every `stride`, until a tile reaches the end."""
    spans = []
    for start in range(0, length, stride):
        if start > 0 and start - stride + size >= length:
            break  # the previous tile already reached the end
        spans.append((start, min(start + size, length)))
    return spans


def blend_ramp(length: int, border: int, at_start: bool, at_end: bool) -> torch.Tensor:
    """1-D tile weight: 1 inside, rising linearly over `border` samples toward each side
    that overlaps a neighbour (1/border, 2/border, ..., 1). Edge sides stay at 1."""
    w = torch.ones(length)
    if border > 0:
        ramp = torch.arange(1, border + 1) / border
        if not at_start:
            w[:border] = ramp
        if not at_end:
            w[-border:] = ramp.flip(0)
    return w


def blend_tiles(
    x: torch.Tensor,
    fn: Callable[[torch.Tensor], torch.Tensor],
    tile_size: Sequence[int],
    tile_stride: Sequence[int],
    *,
    in_per_latent: int,
    out_per_latent: int,
    grid: tuple[int, int],
) -> torch.Tensor:
    """Run `fn` on overlapping spatial tiles of `x` and blend the outputs linearly.

    Tiles are laid out on the latent grid (`grid` = latent H, W); one latent cell is
    `in_per_latent` samples of `x` and `out_per_latent` samples of the output. Overlaps
    are averaged with `blend_ramp` weights (min over H and W). Accumulation is in float32;
    the result has `x`'s dtype.
    """
    size_h, size_w = (int(v) for v in tile_size)
    stride_h, stride_w = (int(v) for v in tile_stride)
    if min(stride_h, stride_w) < 1 or stride_h > size_h or stride_w > size_w:
        raise ValueError(
            f"tile stride must be >= 1 and <= tile size (else tiles leave gaps), "
            f"got size {tuple(tile_size)}, stride {tuple(tile_stride)}"
        )
    gh, gw = grid
    border_h, border_w = (size_h - stride_h) * out_per_latent, (size_w - stride_w) * out_per_latent
    values: Optional[torch.Tensor] = None
    weight = torch.zeros(1, 1, 1, gh * out_per_latent, gw * out_per_latent, device=x.device)
    tiles = [(h, w) for h in tile_spans(gh, size_h, stride_h) for w in tile_spans(gw, size_w, stride_w)]
    logger.debug("blending %d tiles of %s latents", len(tiles), (size_h, size_w))
    for (h0, h1), (w0, w1) in tiles:
        out = fn(x[:, :, :, h0 * in_per_latent:h1 * in_per_latent, w0 * in_per_latent:w1 * in_per_latent])
        if values is None:
            values = torch.zeros(
                *out.shape[:3], gh * out_per_latent, gw * out_per_latent, device=x.device, dtype=torch.float32
            )
        mh = blend_ramp(out.shape[3], border_h, h0 == 0, h0 + size_h >= gh)
        mw = blend_ramp(out.shape[4], border_w, w0 == 0, w0 + size_w >= gw)
        mask = torch.minimum(mh[:, None], mw[None, :]).to(x.device)
        ys, xs = h0 * out_per_latent, w0 * out_per_latent
        region = (..., slice(ys, ys + out.shape[3]), slice(xs, xs + out.shape[4]))
        values[region] += out.float() * mask
        weight[region] += mask
    return (values / weight).to(x.dtype)


# -- loading -------------------------------------------------------------------------------
def load_vae(
    path: Union[str, Path, Sequence[Union[str, Path]]],
    config: Union[VAEConfig, str, None] = None,
    dtype: torch.dtype = torch.float32,
    device: Union[str, torch.device] = "cpu",
) -> WanVAE:
    """Load a Wan2.1 VAE checkpoint (`Wan2.1_VAE.pth`, optionally wrapped under
    `model_state`, or .safetensors) strictly. With no config, the base width is read from
    `encoder.conv1.weight` and the rest is the release's architecture."""
    index = CheckpointIndex(path)
    if config is None:
        config = VAEConfig.preset("sama-14b")
        if "encoder.conv1.weight" in index:
            config = replace(config, dim=index.meta("encoder.conv1.weight")[0][0])
    elif isinstance(config, str):
        config = VAEConfig.preset(config)
    with torch.device("meta"):
        vae = WanVAE(config)
    assign_weights(vae, index, dtype=dtype, device=device)
    logger.info("loaded VAE (dim %d) from %s", config.dim, path)
    return vae


def _triple(v) -> tuple[int, int, int]:
    return (v, v, v) if isinstance(v, int) else tuple(v)  # type: ignore[return-value]


__all__ = [
    "CACHE_FRAMES", "LATENT_MEAN", "LATENT_STD", "VAEConfig", "CausalCache", "CausalConv3d",
    "WanVAE", "blend_tiles", "blend_ramp", "tile_spans", "count_cache_slots", "load_vae",
]
