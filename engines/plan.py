"""Build plans: what TensorRT will be asked to build, decided without TensorRT.

`make_build_plan(manifest, build_config, trt_version, compute_capability)` is pure: the
same inputs always give the same plan and the same cache keys, and every input that can
change the engine TensorRT produces changes the key (tests/engines/test_plan.py checks
each one). The TensorRT adapter only executes a plan.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from typing import Mapping, Optional, Sequence

from .config import BuildConfig, DimRange, Precision

logger = logging.getLogger(__name__)

PLAN_FORMAT_VERSION = 1
ANCHOR_ATTENTION_PLUGIN = "sama_rt::AnchorAttention"
# The submodel whose Linear layers fp8/int8 quantize; the others run once per edit (text
# encoder) or are convolutional (VAE) and stay in 16-bit.
QUANTIZED_SUBMODEL = "dit"


@dataclass(frozen=True)
class ManifestInput:
    """One graph input: name, element type, and shape with dynamic dims named."""

    name: str
    dtype: str
    shape: tuple  # ints (static) and str (named dynamic dimension)


@dataclass(frozen=True)
class ManifestSubmodel:
    """What the engine build needs to know about one exported graph (see `parse_manifest`).

    Named dimensions are axes (ranges in the profile), multiples of an axis
    (latent_height = 2 * grid_height) or products of axes (video_tokens), as in
    export.spec.ModelSpec.
    """

    name: str
    onnx: str  # file name inside the export directory
    inputs: tuple[ManifestInput, ...]
    outputs: tuple[str, ...]
    dims: tuple[tuple[str, DimRange], ...]  # axes -> exported min/opt/max
    multiples: tuple[tuple[str, str, int], ...] = ()  # (dim, axis, factor)
    products: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (dim, axes)
    graph_sha256: str = ""  # the graph file without its weights (architecture, opset, names)
    weights_sha256: str = ""  # the weights that went into the graph
    custom_ops: tuple[str, ...] = ()  # "domain::op_type" of non-standard nodes

    def dim_values(self, ranges: Mapping[str, DimRange], which: str) -> dict[str, int]:
        values = {a: getattr(r, which) for a, r in ranges.items()}
        values.update({d: f * values[a] for d, a, f in self.multiples})
        for d, axes in self.products:
            v = 1
            for a in axes:
                v *= values[a]
            values[d] = v
        return values


@dataclass(frozen=True)
class EnginePlan:
    """Everything the TensorRT adapter does for one submodel, and the key that names it."""

    name: str
    onnx: str
    precision: Precision
    strongly_typed: bool
    builder_flags: tuple[str, ...]
    workspace_bytes: int
    builder_optimization_level: int
    # Per input: (name, min shape, opt shape, max shape); one optimization profile.
    profile: tuple[tuple[str, tuple[int, ...], tuple[int, ...], tuple[int, ...]], ...]
    plugins: tuple[str, ...]
    quant: Optional[dict]
    weight_stripped: bool
    graph_sha256: str
    weights_sha256: str
    trt_version: str
    compute_capability: tuple[int, int]
    cache_key: str

    @property
    def quantized(self) -> bool:
        return self.quant is not None

    @property
    def weights_bound(self) -> bool:
        """Whether the engine only serves the exact weights it was built from.

        A weight-stripped engine is refitted with whatever checkpoint the user loads, so
        the weights do not define it -- unless they are quantized: the fp8/int8 scales come
        from calibrating those very weights, so a different fine-tune needs a new build.
        """
        return not self.weight_stripped or self.quantized

    def to_dict(self) -> dict:
        d = asdict(self)
        d["precision"] = self.precision.value
        d["profile"] = [
            {"input": n, "min": list(lo), "opt": list(opt), "max": list(hi)} for n, lo, opt, hi in self.profile
        ]
        d["builder_flags"] = list(self.builder_flags)
        d["plugins"] = list(self.plugins)
        d["compute_capability"] = list(self.compute_capability)
        return d


@dataclass(frozen=True)
class BuildPlan:
    engines: tuple[EnginePlan, ...]
    build_config: BuildConfig

    def engine(self, name: str) -> EnginePlan:
        for e in self.engines:
            if e.name == name:
                return e
        raise KeyError(f"no engine {name!r} in the plan; planned: {[e.name for e in self.engines]}")


# -- the manifest ------------------------------------------------------------------------
def parse_manifest(manifest: Mapping) -> dict[str, ManifestSubmodel]:
    """The export manifest (manifest.json written by sama_rt.export) as submodel entries.

    Per submodel (under "submodels", "models" or "graphs": a mapping name -> entry, or a
    list of entries with "name"): the graph file ("onnx" / "file" / "path"), "inputs"
    [{name, dtype, shape}] with dynamic dims as strings, "outputs", the axis ranges
    ("axis_ranges" / "profiles" / "dims": {axis: [min, opt, max] or {min, opt, max}}),
    optional "multiples" {dim: {axis, factor}} and "products" {dim: [axes]} (ModelSpec),
    "graph_sha256", "weights_sha256" (or one top-level "weights_sha256"), "custom_ops".
    """
    raw = next((manifest[k] for k in ("submodels", "models", "graphs") if k in manifest), None)
    if raw is None:
        raise ValueError("export manifest lists no graphs (no 'submodels' / 'models' / 'graphs' entry)")
    if isinstance(raw, Mapping):
        items = [dict(v, name=v.get("name", k)) for k, v in raw.items()]
    else:
        items = [dict(v) for v in raw]
    out = {}
    for entry in items:
        name = entry["name"]
        onnx_file = next((entry[k] for k in ("onnx", "file", "path") if k in entry), None)
        if onnx_file is None or "inputs" not in entry or "outputs" not in entry:
            raise ValueError(f"manifest entry {name!r} needs a graph file, 'inputs' and 'outputs'")
        dims_raw = next((entry[k] for k in ("axis_ranges", "profiles", "dims") if k in entry), {})
        multiples = entry.get("multiples", {})
        out[name] = ManifestSubmodel(
            name=name,
            onnx=str(onnx_file),
            inputs=tuple(
                ManifestInput(i["name"], str(i.get("dtype", "float32")), tuple(i["shape"])) for i in entry["inputs"]
            ),
            outputs=tuple(o["name"] if isinstance(o, Mapping) else str(o) for o in entry["outputs"]),
            dims=tuple(sorted((k, DimRange(*_as_range(v))) for k, v in dims_raw.items())),
            multiples=tuple(sorted(
                (d, m["axis"], int(m["factor"])) if isinstance(m, Mapping) else (d, m[0], int(m[1]))
                for d, m in multiples.items()
            )),
            products=tuple(sorted((d, tuple(a)) for d, a in entry.get("products", {}).items())),
            graph_sha256=str(entry.get("graph_sha256", "")),
            weights_sha256=str(entry.get("weights_sha256", manifest.get("weights_sha256", ""))),
            custom_ops=tuple(entry.get("custom_ops", ())),
        )
    return out


def _as_range(v) -> tuple[int, int, int]:
    if isinstance(v, Mapping):
        return int(v["min"]), int(v["opt"]), int(v["max"])
    lo, opt, hi = v
    return int(lo), int(opt), int(hi)


# -- the plan ----------------------------------------------------------------------------
def submodel_precision(name: str, precision: Precision) -> Precision:
    """The precision one submodel is built at for a requested engine precision.

    Only the DiT is quantized. The umT5 encoder overflows in fp16 (its activations exceed
    65504, a known T5 property), so it stays bf16 whatever is asked.
    """
    if name == QUANTIZED_SUBMODEL:
        return precision
    if precision.quantized or name.startswith("text"):
        return Precision.BF16
    return precision


def resolve_profile(
    sub: ManifestSubmodel, overrides: Mapping[str, DimRange]
) -> tuple[tuple[str, tuple[int, ...], tuple[int, ...], tuple[int, ...]], ...]:
    """min/opt/max shape of every input: the axes' export ranges (overridden where the
    build asks), multiples and products derived from them. Every named dimension grows with
    its axes, so the shapes at the min/opt/max points bound all shapes in between."""
    ranges = dict(sub.dims)
    ranges.update({d: r for d, r in overrides.items() if d in ranges})
    values = {w: sub.dim_values(ranges, w) for w in ("min", "opt", "max")}
    profile = []
    for inp in sub.inputs:
        unknown = [d for d in inp.shape if isinstance(d, str) and d not in values["min"]]
        if unknown:
            raise ValueError(
                f"{sub.name}: input {inp.name} has dynamic dims {unknown} without a profile range; "
                f"known: {sorted(values['min'])}"
            )
        shapes = [tuple(values[w][d] if isinstance(d, str) else int(d) for d in inp.shape) for w in ("min", "opt", "max")]
        profile.append((inp.name, *shapes))
    return tuple(profile)


def builder_flags(precision: Precision, strongly_typed: bool, weight_stripped: bool) -> tuple[str, ...]:
    """TensorRT BuilderFlag names (tensorrt.BuilderFlag.<NAME>) for the build."""
    flags = []
    if not strongly_typed:
        # Weakly typed: allow the builder to choose 16-bit kernels; FP32 stays allowed.
        flags.append({Precision.BF16: "BF16", Precision.FP16: "FP16"}[precision])
    if weight_stripped:
        # STRIP_PLAN drops the refittable weights from the plan. REFIT (not REFIT_IDENTICAL,
        # which lets the builder fold the build-time weights into kernels) keeps every
        # weight refittable, so a fine-tune with different values can be loaded.
        flags += ["STRIP_PLAN", "REFIT"]
    return tuple(flags)


def make_build_plan(
    manifest: Mapping,
    build_config: BuildConfig,
    trt_version: str,
    compute_capability: Sequence[int],
    plugin_fingerprint: str = "",
) -> BuildPlan:
    """Plan the engines for an export manifest.

    trt_version: e.g. "10.13.0.35"; compute_capability: (major, minor) of the GPU.
    plugin_fingerprint: a digest of the plugin code (kernel source / PTX) when graphs use the
    AnchorAttention plugin, so a kernel change invalidates engines that embed it.
    """
    cc = (int(compute_capability[0]), int(compute_capability[1]))
    precision = build_config.precision
    if cc < precision.min_compute_capability:
        need = ".".join(map(str, precision.min_compute_capability))
        raise ValueError(
            f"{precision.value} engines need a GPU of compute capability >= {need}; this GPU is {cc[0]}.{cc[1]}"
        )
    submodels = parse_manifest(manifest)
    overrides = build_config.dim_overrides
    known_dims = {d for s in submodels.values() for d, _ in s.dims}
    unknown = sorted(set(overrides) - known_dims)
    if unknown:
        raise ValueError(f"BuildConfig.dims names unknown dimensions {unknown}; the export declares {sorted(known_dims)}")
    wanted = build_config.submodels or tuple(submodels)
    missing = [n for n in wanted if n not in submodels]
    if missing:
        raise ValueError(f"submodels {missing} are not in the export; exported: {sorted(submodels)}")

    engines = []
    for name in wanted:
        sub = submodels[name]
        sub_precision = submodel_precision(name, precision)
        quant = build_config.quant.to_dict() if sub_precision.quantized and build_config.quant else None
        strongly_typed = build_config.is_strongly_typed if sub_precision is precision else sub_precision.quantized
        if sub_precision.quantized:
            strongly_typed = True
        plugins = (
            (ANCHOR_ATTENTION_PLUGIN,)
            if build_config.register_plugins and any(op.endswith("AnchorAttention") for op in sub.custom_ops)
            else ()
        )
        # See EnginePlan.weights_bound.
        weights_define_engine = not build_config.weight_stripped or sub_precision.quantized
        profile = resolve_profile(sub, overrides)
        flags = builder_flags(sub_precision, strongly_typed, build_config.weight_stripped)
        key_material = {
            "format": PLAN_FORMAT_VERSION,
            "name": name,
            "graph_sha256": sub.graph_sha256,
            "weights_sha256": sub.weights_sha256 if weights_define_engine else None,
            "precision": sub_precision.value,
            "strongly_typed": strongly_typed,
            "builder_flags": list(flags),
            "workspace_bytes": build_config.workspace_bytes,
            "builder_optimization_level": build_config.builder_optimization_level,
            "profile": [[n, list(a), list(b), list(c)] for n, a, b, c in profile],
            "plugins": list(plugins),
            "plugin_fingerprint": plugin_fingerprint if plugins else None,
            "quant": quant,
            "weight_stripped": build_config.weight_stripped,
            "trt_version": trt_version,
            "compute_capability": list(cc),
        }
        engines.append(
            EnginePlan(
                name=name,
                onnx=sub.onnx,
                precision=sub_precision,
                strongly_typed=strongly_typed,
                builder_flags=flags,
                workspace_bytes=build_config.workspace_bytes,
                builder_optimization_level=build_config.builder_optimization_level,
                profile=profile,
                plugins=plugins,
                quant=quant,
                weight_stripped=build_config.weight_stripped,
                graph_sha256=sub.graph_sha256,
                weights_sha256=sub.weights_sha256,
                trt_version=trt_version,
                compute_capability=cc,
                cache_key=cache_key(key_material),
            )
        )
        logger.debug("planned %s: %s, key %s", name, sub_precision.value, engines[-1].cache_key[:12])
    return BuildPlan(engines=tuple(engines), build_config=build_config)


def cache_key(material: Mapping) -> str:
    """sha256 of the canonical JSON of everything that changes an engine."""
    blob = json.dumps(material, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()
