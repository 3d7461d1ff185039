"""How an engine is built: precision, quantization and TensorRT builder settings.

Everything here is a frozen value. `make_build_plan` (plan.py) turns these plus the
export manifest, the TensorRT version and the GPU into a plan and its cache key, so a
field that changes the built engine must be part of these dataclasses and of
`BuildConfig.key_fields()`; a field that does not (the timing cache path) stays out.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Mapping, Optional

from ..choices import Choice

GIB = 1 << 30


class Precision(Choice):
    BF16 = "bf16"
    FP16 = "fp16"
    FP8 = "fp8"
    INT8 = "int8"

    @property
    def quantized(self) -> bool:
        """fp8/int8 engines are built from Q/DQ graphs made by engines.quantize."""
        return self in (Precision.FP8, Precision.INT8)

    @property
    def min_compute_capability(self) -> tuple[int, int]:
        # FP8 tensor cores exist from Ada (8.9); BF16 from Ampere (8.0).
        return {
            Precision.BF16: (8, 0),
            Precision.FP16: (7, 0),
            Precision.FP8: (8, 9),
            Precision.INT8: (7, 5),
        }[self]


# Linear layers of the DiT that run in fp8/int8. Everything else (norms, modulation, the
# time/text/segment embeddings, siglip MLP, heads, softmax) stays in high precision: the
# modulation and heads are tiny and error-sensitive, and norms/softmax gain nothing from
# 8 bits. Patterns are fnmatch globs over module names (the state-dict key minus
# ".weight"). Cross-attention k/v run once per edit on the text context (cached), so
# quantizing them saves nothing per step.
DIT_QUANTIZED_LINEARS: tuple[str, ...] = (
    "blocks.*.self_attn.q",
    "blocks.*.self_attn.k",
    "blocks.*.self_attn.v",
    "blocks.*.self_attn.o",
    "blocks.*.cross_attn.q",
    "blocks.*.cross_attn.o",
    "blocks.*.ffn.0",
    "blocks.*.ffn.2",
)


@dataclass(frozen=True)
class QuantConfig:
    """Post-training quantization of a graph's Linear layers (engines.quantize).

    Weights: per-output-channel scales (amax / qmax). Activations: one scale per tensor
    from the calibration amax. INT8 applies SmoothQuant first (alpha migrates activation
    outliers into the weights); FP8's wider dynamic range does not need it.
    """

    precision: Precision
    include: tuple[str, ...] = DIT_QUANTIZED_LINEARS
    exclude: tuple[str, ...] = ()
    smoothquant_alpha: Optional[float] = None
    # Calibration amax is multiplied by this before the scale is derived (1.0 = plain max).
    amax_margin: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "precision", Precision.parse(self.precision))
        object.__setattr__(self, "include", tuple(self.include))
        object.__setattr__(self, "exclude", tuple(self.exclude))
        if not self.precision.quantized:
            raise ValueError(f"QuantConfig needs precision fp8 or int8, got {self.precision.value}")
        if self.smoothquant_alpha is not None and not 0.0 <= self.smoothquant_alpha <= 1.0:
            raise ValueError(f"smoothquant_alpha must be in [0, 1], got {self.smoothquant_alpha}")
        if self.amax_margin <= 0:
            raise ValueError(f"amax_margin must be > 0, got {self.amax_margin}")
        if not self.include:
            raise ValueError("QuantConfig.include is empty: nothing would be quantized")

    @classmethod
    def default(cls, precision: "str | Precision") -> "QuantConfig":
        precision = Precision.parse(precision)
        return cls(precision=precision, smoothquant_alpha=0.5 if precision is Precision.INT8 else None)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["precision"] = self.precision.value
        d["include"] = list(self.include)
        d["exclude"] = list(self.exclude)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "QuantConfig":
        _reject_unknown(cls, d)
        return cls(**d)


@dataclass(frozen=True)
class DimRange:
    """min <= opt <= max of one named dynamic dimension of an optimization profile."""

    min: int
    opt: int
    max: int

    def __post_init__(self):
        if not (1 <= self.min <= self.opt <= self.max):
            raise ValueError(f"dimension range must satisfy 1 <= min <= opt <= max, got {self}")

    @classmethod
    def fixed(cls, value: int) -> "DimRange":
        return cls(value, value, value)

    def to_list(self) -> list[int]:
        return [self.min, self.opt, self.max]


@dataclass(frozen=True)
class BuildConfig:
    """TensorRT build settings shared by all submodels of one `build-engines` run.

    dims: overrides of the export spec's named dynamic dimensions (e.g. the latent frame
    count derived from `--frames 49,81`); dimensions not named keep the spec's range.
    strongly_typed: None = automatic (on for Q/DQ graphs, where the graph's types must be
    obeyed exactly; off otherwise so the builder may pick fp16/bf16 kernels).
    weight_stripped: build engines without weights and refit them from the user's
    checkpoint at load time (one build serves every fine-tune of the architecture).
    """

    precision: Precision = Precision.BF16
    dims: tuple[tuple[str, DimRange], ...] = ()
    strongly_typed: Optional[bool] = None
    workspace_bytes: int = 8 * GIB
    builder_optimization_level: int = 3
    weight_stripped: bool = True
    register_plugins: bool = True
    timing_cache: Optional[str] = None
    quant: Optional[QuantConfig] = None
    submodels: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "precision", Precision.parse(self.precision))
        dims = self.dims.items() if isinstance(self.dims, Mapping) else self.dims
        dims = tuple(sorted((str(k), v if isinstance(v, DimRange) else DimRange(*v)) for k, v in dims))
        object.__setattr__(self, "dims", dims)
        object.__setattr__(self, "submodels", tuple(self.submodels))
        if self.precision.quantized and self.quant is None:
            object.__setattr__(self, "quant", QuantConfig.default(self.precision))
        if self.quant is not None and self.quant.precision is not self.precision:
            raise ValueError(
                f"quant precision {self.quant.precision.value} differs from build precision {self.precision.value}"
            )
        if self.strongly_typed is False and self.precision.quantized:
            raise ValueError(
                f"{self.precision.value} engines are built from Q/DQ graphs and need a strongly typed network"
            )
        if self.workspace_bytes <= 0:
            raise ValueError(f"workspace_bytes must be > 0, got {self.workspace_bytes}")
        if not 0 <= self.builder_optimization_level <= 5:
            raise ValueError(f"builder_optimization_level must be 0..5, got {self.builder_optimization_level}")

    @property
    def is_strongly_typed(self) -> bool:
        return self.precision.quantized if self.strongly_typed is None else self.strongly_typed

    @property
    def dim_overrides(self) -> dict[str, DimRange]:
        return dict(self.dims)

    def with_(self, **changes) -> "BuildConfig":
        return replace(self, **changes)

    def key_fields(self) -> dict:
        """The settings that change the built engine (the timing cache only speeds builds up)."""
        return {
            "precision": self.precision.value,
            "dims": {k: v.to_list() for k, v in self.dims},
            "strongly_typed": self.is_strongly_typed,
            "workspace_bytes": self.workspace_bytes,
            "builder_optimization_level": self.builder_optimization_level,
            "weight_stripped": self.weight_stripped,
            "register_plugins": self.register_plugins,
            "quant": None if self.quant is None else self.quant.to_dict(),
        }

    def to_dict(self) -> dict:
        d = self.key_fields()
        d["strongly_typed"] = self.strongly_typed
        d["timing_cache"] = self.timing_cache
        d["submodels"] = list(self.submodels)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "BuildConfig":
        _reject_unknown(cls, d)
        d = dict(d)
        if d.get("quant") is not None:
            d["quant"] = QuantConfig.from_dict(d["quant"])
        if "dims" in d:
            d["dims"] = {k: DimRange(*v) for k, v in dict(d["dims"]).items()}
        return cls(**d)


def _reject_unknown(cls, d: Mapping) -> None:
    unknown = set(d) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
