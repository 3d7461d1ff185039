"""What each exported graph looks like: names, named dynamic dimensions, profiles, sample inputs.

One `ModelSpec` per submodel (DiT, text encoder, VAE encoder/decoder chunk steps). The
exporter reads it to trace and name the graph; the engine build reads it (from the
manifest) for its optimisation profiles, so the two cannot drift apart.

Dimensions are described by a few *axes* that the runtime chooses (batch, latent grid
size, ...). Every named dimension of a tensor is either an axis, a fixed multiple of one
(`multiples`: latent_height = 2 * grid_height) or a product of axes (`products`:
video_tokens = grid_frames * grid_height * grid_width). Multiples are expressed to
torch.export exactly; products become their own symbol in the graph, checked at run time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence, Union

import torch

Dim = Union[int, str]
Point = Mapping[str, int]  # axis name -> value

# The dtype of a tensor spec: a fixed torch dtype, or MODEL_DTYPE for "the export dtype".
MODEL_DTYPE = "model"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[Dim, ...]
    dtype: str  # "float32", "int64", or MODEL_DTYPE

    def torch_dtype(self, model_dtype: torch.dtype) -> torch.dtype:
        return model_dtype if self.dtype == MODEL_DTYPE else getattr(torch, self.dtype)

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class AxisRange:
    """min <= opt <= max of one axis; TensorRT profiles take one shape at each."""

    min: int
    opt: int
    max: int

    def __post_init__(self):
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(f"axis range must satisfy 1 <= min <= opt <= max, got {self}")

    @classmethod
    def of(cls, values: Sequence[int], opt: Optional[int] = None) -> "AxisRange":
        values = sorted(set(int(v) for v in values))
        return cls(values[0], values[-1] if opt is None else int(opt), values[-1])


@dataclass(frozen=True)
class ModelSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    axes: tuple[str, ...]
    multiples: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    products: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Builds sample inputs at a point: (point, model dtype, generator) -> {input name: tensor}.
    make_inputs: Optional[Callable[[Point, torch.dtype, torch.Generator], dict]] = field(
        default=None, compare=False, repr=False
    )
    # Extra facts recorded in the manifest (config of the chunk loop, attention mode, ...).
    notes: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self):
        named = {d for t in self.inputs + self.outputs for d in t.shape if isinstance(d, str)}
        known = set(self.axes) | set(self.multiples) | set(self.products)
        unknown = named - known
        if unknown:
            raise ValueError(f"{self.name}: dimensions {sorted(unknown)} are not axes, multiples or products")
        for dim, (axis, factor) in self.multiples.items():
            if axis not in self.axes or factor < 1:
                raise ValueError(f"{self.name}: {dim} = {factor} * {axis} needs an axis and a factor >= 1")
        for dim, axes in self.products.items():
            if not set(axes) <= set(self.axes):
                raise ValueError(f"{self.name}: product {dim} uses unknown axes {axes}")
        names = [t.name for t in self.inputs + self.outputs]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: tensor names are not unique: {names}")

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def dim_values(self, point: Point) -> dict[str, int]:
        missing = set(self.axes) - set(point)
        if missing:
            raise ValueError(f"{self.name}: point lacks axes {sorted(missing)}")
        values = {a: int(point[a]) for a in self.axes}
        values.update({d: f * values[a] for d, (a, f) in self.multiples.items()})
        values.update({d: math.prod(values[a] for a in axes) for d, axes in self.products.items()})
        return values

    def shapes(self, point: Point) -> dict[str, tuple[int, ...]]:
        """Concrete shape of every input and output at `point`."""
        values = self.dim_values(point)
        return {
            t.name: tuple(values[d] if isinstance(d, str) else d for d in t.shape)
            for t in self.inputs + self.outputs
        }

    def profile(self, ranges: Mapping[str, AxisRange]) -> dict[str, dict[str, list[int]]]:
        """min/opt/max shape of every input. Every named dimension grows with its axes, so
        the shapes at the min/opt/max points bound all shapes in between."""
        points = {k: {a: getattr(ranges[a], k) for a in self.axes} for k in ("min", "opt", "max")}
        shapes = {k: self.shapes(p) for k, p in points.items()}
        return {t.name: {k: list(shapes[k][t.name]) for k in points} for t in self.inputs}

    def torch_dynamic_shapes(self, ranges: Mapping[str, AxisRange]) -> dict[str, dict[int, object]]:
        """`dynamic_shapes` for torch.export: axes and their multiples tied exactly, products
        as free symbols bounded by the products of the axis bounds."""
        from torch.export import Dim as TorchDim

        # A graph stays dynamic in every named dimension even when the buckets pin an axis
        # to one value (min == max, which torch.export's Dim refuses): the symbol then gets
        # one size of headroom, and the engine profile still pins the value.
        def bounds(lo: int, hi: int) -> dict:
            return {"min": lo, "max": max(hi, lo + 1)}

        symbols = {a: TorchDim(a, **bounds(ranges[a].min, ranges[a].max)) for a in self.axes}
        for dim, axes in self.products.items():
            symbols[dim] = TorchDim(
                dim,
                **bounds(math.prod(ranges[a].min for a in axes), math.prod(ranges[a].max for a in axes)),
            )
        for dim, (axis, factor) in self.multiples.items():
            symbols[dim] = factor * symbols[axis] if factor != 1 else symbols[axis]
        return {
            t.name: {i: symbols[d] for i, d in enumerate(t.shape) if isinstance(d, str)}
            for t in self.inputs
        }

    def sample_inputs(self, point: Point, dtype: torch.dtype, seed: int = 0) -> dict[str, torch.Tensor]:
        if self.make_inputs is None:
            raise ValueError(f"{self.name}: no sample input builder")
        inputs = self.make_inputs(point, dtype, torch.Generator().manual_seed(seed))
        want = self.shapes(point)
        for t in self.inputs:
            got = tuple(inputs[t.name].shape)
            if got != want[t.name]:
                raise AssertionError(f"{self.name}: sample {t.name} has shape {got}, spec says {want[t.name]}")
        return {name: inputs[name] for name in self.input_names}

    def to_dict(self, ranges: Optional[Mapping[str, AxisRange]] = None, model_dtype: Optional[str] = None) -> dict:
        """JSON form for the manifest; `model_dtype` (e.g. "bfloat16") replaces MODEL_DTYPE."""

        def tensor(t: TensorSpec) -> dict:
            d = t.to_dict()
            if model_dtype is not None and t.dtype == MODEL_DTYPE:
                d["dtype"] = model_dtype
            return d

        out = {
            "name": self.name,
            "inputs": [tensor(t) for t in self.inputs],
            "outputs": [tensor(t) for t in self.outputs],
            "axes": list(self.axes),
            "multiples": {d: {"axis": a, "factor": f} for d, (a, f) in self.multiples.items()},
            "products": {d: list(a) for d, a in self.products.items()},
            "notes": dict(self.notes),
        }
        if ranges is not None:
            out["axis_ranges"] = {a: vars(ranges[a]) for a in self.axes}
            out["profile"] = self.profile(ranges)
        return out


def trace_point(ranges: Mapping[str, AxisRange], axes: Sequence[str]) -> dict[str, int]:
    """The point to trace at: the smallest sizes, but never 1 (torch.export would
    specialise a size-1 dimension into a constant and silently export a static graph)."""
    point = {}
    for a in axes:
        r = ranges[a]
        value = max(r.min, 2)
        if value > r.max:
            raise ValueError(f"axis {a} has max {r.max}: a dynamic axis needs room for size 2")
        point[a] = value
    return point


# -- shape buckets ------------------------------------------------------------------------
@dataclass(frozen=True)
class ShapeBuckets:
    """The video sizes an export must serve: frame counts (4k+1) and (height, width) pairs
    in pixels. Profiles span min..max of them; opt is the first resolution at the largest
    frame count with the largest batch (CFG), the shape a typical edit runs most."""

    frames: tuple[int, ...] = (49, 81)
    resolutions: tuple[tuple[int, int], ...] = ((480, 832),)
    batch: tuple[int, ...] = (1, 2)
    temporal_factor: int = 4
    spatial_factor: int = 8

    def __post_init__(self):
        object.__setattr__(self, "frames", tuple(int(f) for f in self.frames))
        object.__setattr__(self, "resolutions", tuple((int(h), int(w)) for h, w in self.resolutions))
        if not self.frames or not self.resolutions or not self.batch:
            raise ValueError("buckets need at least one frame count, resolution and batch size")
        for f in self.frames:
            if f < 1 or (f - 1) % self.temporal_factor:
                raise ValueError(f"frame count {f} is not {self.temporal_factor}k+1")
        for h, w in self.resolutions:
            if h % (2 * self.spatial_factor) or w % (2 * self.spatial_factor):
                raise ValueError(
                    f"resolution {h}x{w}: height and width must be multiples of {2 * self.spatial_factor} "
                    "(the VAE's 8x and the DiT's 2x2 patches)"
                )

    def latent_frames(self) -> list[int]:
        return [(f - 1) // self.temporal_factor + 1 for f in self.frames]

    def latent_sizes(self) -> list[tuple[int, int]]:
        s = self.spatial_factor
        return [(h // s, w // s) for h, w in self.resolutions]

    @classmethod
    def parse(cls, frames: str, resolutions: str) -> "ShapeBuckets":
        """From CLI strings: "49,81" and "480x832,832x480"."""
        try:
            fs = tuple(int(f) for f in frames.split(",") if f.strip())
            rs = tuple(tuple(int(v) for v in r.lower().split("x")) for r in resolutions.split(",") if r.strip())
        except ValueError:
            raise ValueError(f"cannot parse frames {frames!r} / resolutions {resolutions!r}") from None
        if any(len(r) != 2 for r in rs):
            raise ValueError(f"resolutions must be HEIGHTxWIDTH, got {resolutions!r}")
        return cls(frames=fs, resolutions=rs)  # type: ignore[arg-type]


def _first_opt(values: Sequence[int], first: int) -> AxisRange:
    return AxisRange(min(values), first, max(values))


# -- the DiT --------------------------------------------------------------------------------
NUM_ANCHORS = 65  # semantic tokens per video in the released model (SAMA.md)
TEXT_LENGTH = 512


def dit_spec(cfg, num_anchors: int = NUM_ANCHORS, text_length: int = TEXT_LENGTH, attention: str = "plugin") -> ModelSpec:
    """The DiT's one denoising forward with host-computed time sinusoid and RoPE tables."""
    from ..models.dit import sinusoid_embedding
    from ..models.rope import rope_tables

    pf, ph, pw = cfg.patch_size
    video = ("batch", cfg.in_dim, "latent_frames", "latent_height", "latent_width")
    half = cfg.head_dim // 2

    def make_inputs(point: Point, dtype: torch.dtype, gen: torch.Generator) -> dict:
        b = point["batch"]
        f, h, w = point["grid_frames"] * pf, point["grid_height"] * ph, point["grid_width"] * pw
        cos, sin = rope_tables(point["grid_frames"], point["grid_height"], point["grid_width"], cfg.head_dim)
        # Distinct timesteps per batch row, rounded to the model dtype as SamaDiT.embed_time does.
        timesteps = torch.linspace(937.5, 400.0, b).to(dtype)
        context = torch.randn(b, text_length, cfg.text_dim, generator=gen)
        context[:, text_length // 4:] = 0  # padding rows are zero, as the text encoder gives
        return {
            "latents": torch.randn(b, cfg.in_dim, f, h, w, generator=gen).to(dtype),
            "source_latents": torch.randn(b, cfg.in_dim, f, h, w, generator=gen).to(dtype),
            "semantic_latents": torch.randn(b, num_anchors, cfg.siglip_dim, generator=gen).to(dtype),
            "context": context.to(dtype),
            "time_sinusoid": sinusoid_embedding(cfg.freq_dim, timesteps),
            "rope_cos": cos,
            "rope_sin": sin,
        }

    return ModelSpec(
        name="dit",
        inputs=(
            TensorSpec("latents", video, MODEL_DTYPE),
            TensorSpec("source_latents", video, MODEL_DTYPE),
            TensorSpec("semantic_latents", ("batch", num_anchors, cfg.siglip_dim), MODEL_DTYPE),
            TensorSpec("context", ("batch", text_length, cfg.text_dim), MODEL_DTYPE),
            TensorSpec("time_sinusoid", ("batch", cfg.freq_dim), "float32"),
            TensorSpec("rope_cos", ("video_tokens", half), "float32"),
            TensorSpec("rope_sin", ("video_tokens", half), "float32"),
        ),
        outputs=(
            TensorSpec("noise_pred", video, "float32"),
            TensorSpec("semantic_pred", ("batch", num_anchors, cfg.siglip_dim), "float32"),
        ),
        axes=("batch", "grid_frames", "grid_height", "grid_width"),
        multiples={
            "latent_frames": ("grid_frames", pf),
            "latent_height": ("grid_height", ph),
            "latent_width": ("grid_width", pw),
        },
        products={"video_tokens": ("grid_frames", "grid_height", "grid_width")},
        make_inputs=make_inputs,
        notes={
            "attention": attention,
            "time_sinusoid": "sama_rt.models.dit.sinusoid_embedding(freq_dim, timestep) in float64 -> "
            "float32, after rounding the timestep to the model dtype (SamaDiT.embed_time)",
            "rope": "sama_rt.models.rope.rope_tables(grid_frames, grid_height, grid_width, head_dim)",
        },
    )


def dit_ranges(cfg, buckets: ShapeBuckets) -> dict[str, AxisRange]:
    pf, ph, pw = cfg.patch_size
    frames = [f // pf for f in buckets.latent_frames()]
    sizes = buckets.latent_sizes()
    return {
        "batch": _first_opt(buckets.batch, max(buckets.batch)),
        "grid_frames": _first_opt(frames, max(frames)),
        "grid_height": _first_opt([h // ph for h, _ in sizes], sizes[0][0] // ph),
        "grid_width": _first_opt([w // pw for _, w in sizes], sizes[0][1] // pw),
    }


# -- the text encoder -----------------------------------------------------------------------
def text_spec(cfg, text_length: int = TEXT_LENGTH) -> ModelSpec:
    """umT5 over right-padded token ids -> the DiT's context (rows past each prompt zero)."""

    def make_inputs(point: Point, dtype: torch.dtype, gen: torch.Generator) -> dict:
        b = point["batch"]
        ids = torch.randint(2, cfg.vocab, (b, text_length), generator=gen)
        lengths = torch.linspace(text_length // 8, text_length // 3, b).long()
        mask = (torch.arange(text_length)[None, :] < lengths[:, None]).long()
        return {"ids": ids * mask, "mask": mask}

    return ModelSpec(
        name="text_encoder",
        inputs=(
            TensorSpec("ids", ("batch", text_length), "int64"),
            TensorSpec("mask", ("batch", text_length), "int64"),
        ),
        outputs=(TensorSpec("context", ("batch", text_length, cfg.dim), MODEL_DTYPE),),
        axes=("batch",),
        make_inputs=make_inputs,
        notes={"mask": "right-padded: ones for the real tokens (EOS included), then zeros"},
    )


def text_ranges(buckets: ShapeBuckets) -> dict[str, AxisRange]:
    return {"batch": _first_opt(buckets.batch, max(buckets.batch))}


# -- the VAE chunk steps --------------------------------------------------------------------
VAE_STEPS = ("encoder_first", "encoder_chunk", "decoder_first", "decoder_chunk")


def vae_cache_shapes(vae, step: str, point: Point) -> list[tuple[int, ...]]:
    """Shapes of the causal-cache tensors a chunk step produces at `point`, found by
    running the step on the meta device (no memory, no compute)."""
    from .wrappers import vae_step_meta_outputs

    return [tuple(t.shape) for t in vae_step_meta_outputs(vae, step, point)[1:]]


def _spatial_name(value: int, latent: int, axis: str, pixel_factor: int) -> Dim:
    """Name of a cache dimension `value` at latent size `latent`: the axis itself, the
    pixel size (height/width), or `<axis>_x<factor>` in between."""
    if value % latent:
        raise ValueError(f"cache size {value} is not a multiple of the latent size {latent}")
    factor = value // latent
    if factor == pixel_factor:
        return axis.replace("latent_", "")
    return axis if factor == 1 else f"{axis}_x{factor}"


def vae_spec(vae, step: str) -> ModelSpec:
    """One causal chunk step of the VAE with its cache as explicit inputs and outputs.

    `*_first` starts a video (no cache in, the first frame alone); `*_chunk` continues it
    (4 frames / 1 latent frame in, cache in and out). The runtime loops:
    first, chunk, chunk, ... feeding each step's cache outputs to the next step.
    """
    if step not in VAE_STEPS:
        raise ValueError(f"unknown VAE step {step!r}; valid: {', '.join(VAE_STEPS)}")
    cfg = vae.config
    s, tf = cfg.spatial_factor, cfg.temporal_factor
    first = step.endswith("_first")
    frames = 1 if first else tf
    pixels = (1, 3, frames, "height", "width")
    latent = (1, cfg.z_dim, 1, "latent_height", "latent_width")
    if step.startswith("encoder"):
        x_in, x_out = TensorSpec("frames", pixels, MODEL_DTYPE), TensorSpec("latent", latent, MODEL_DTYPE)
    else:
        x_in, x_out = TensorSpec("latent", latent, MODEL_DTYPE), TensorSpec("frames", pixels, MODEL_DTYPE)

    # Cache shapes at two points tell which spatial dims scale with the latent size and how.
    p1, p2 = {"latent_height": 2, "latent_width": 3}, {"latent_height": 3, "latent_width": 5}
    c1, c2 = vae_cache_shapes(vae, step, p1), vae_cache_shapes(vae, step, p2)
    multiples = {"height": ("latent_height", s), "width": ("latent_width", s)}
    cache_dims = []
    for a, b in zip(c1, c2):
        if a[:3] != b[:3]:
            raise AssertionError(f"cache batch/channels/frames depend on the frame size: {a} vs {b}")
        h = _spatial_name(a[3], p1["latent_height"], "latent_height", s)
        w = _spatial_name(a[4], p1["latent_width"], "latent_width", s)
        if b[3] != a[3] // 2 * 3 or b[4] != a[4] // 3 * 5:
            raise AssertionError(f"cache spatial size is not proportional to the latent size: {a} vs {b}")
        for name, axis in ((h, "latent_height"), (w, "latent_width")):
            if name not in (axis, "height", "width"):
                multiples[name] = (axis, int(name.rsplit("_x", 1)[1]))
        cache_dims.append((a[0], a[1], a[2], h, w))
    cache_out = tuple(TensorSpec(f"cache_out_{i:02d}", d, MODEL_DTYPE) for i, d in enumerate(cache_dims))
    cache_in = () if first else tuple(TensorSpec(f"cache_in_{i:02d}", d, MODEL_DTYPE) for i, d in enumerate(cache_dims))

    def make_inputs(point: Point, dtype: torch.dtype, gen: torch.Generator) -> dict:
        values = ModelSpec.dim_values(spec, point)
        out = {}
        for t in (x_in,) + cache_in:
            shape = tuple(values[d] if isinstance(d, str) else d for d in t.shape)
            out[t.name] = torch.randn(shape, generator=gen).to(dtype)
        if x_in.name == "frames":
            out["frames"] = out["frames"].clamp(-1, 1)
        return out

    spec = ModelSpec(
        name=f"vae_{step}",
        inputs=(x_in,) + cache_in,
        outputs=(x_out,) + cache_out,
        axes=("latent_height", "latent_width"),
        multiples=multiples,
        make_inputs=make_inputs,
        notes={
            "step": step,
            "frames_per_step": frames,
            "loop": "first step once (no cache), then the chunk step for every further "
            f"{'4 frames' if step.startswith('encoder') else 'latent frame'}, its cache_out_* "
            "fed back as the next step's cache_in_* (same order)",
            "clamp": "decoder frames are not clamped (tiled decoding blends before clamping)",
        },
    )
    return spec


def vae_ranges(vae, buckets: ShapeBuckets) -> dict[str, AxisRange]:
    sizes = buckets.latent_sizes()
    return {
        "latent_height": _first_opt([h for h, _ in sizes], sizes[0][0]),
        "latent_width": _first_opt([w for _, w in sizes], sizes[0][1]),
    }
