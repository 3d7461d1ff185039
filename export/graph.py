"""Trace a wrapper into ONNX and write its weights as external data, one tensor at a time.

Memory is what shapes this module. The 14B DiT is ~28 GB in bf16 and the host has 24 GB,
so the model is traced on the meta device (no weight bytes at all), exported with
`optimize=False` (which keeps the initializer names equal to the state-dict names, needed
for refitting engines, and does not merge identical weights), and then every initializer
is filled by reading its tensor from the checkpoint, converting it, appending it to
`<name>.onnx.data` and dropping it. The graph proto itself only holds references.
"""
from __future__ import annotations

import hashlib
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional, Protocol

import onnx
import torch

from .spec import AxisRange, ModelSpec, trace_point

logger = logging.getLogger(__name__)

# Tensors below this size stay inside the graph proto: shape-like constants must be
# visible to onnxruntime's shape inference (an external size_threshold of 0 breaks it).
INLINE_LIMIT_BYTES = 1024
# Large tensors start on page boundaries so runtimes can memory-map them.
PAGE_ALIGN = 4096
SMALL_ALIGN = 64


class ExportError(RuntimeError):
    """The exported graph does not match its spec or its weights."""


class WeightSource(Protocol):
    def get(self, name: str) -> Optional[torch.Tensor]:
        """The tensor for an initializer name, or None if this source does not have it."""

    def describe(self) -> dict:
        """What the weights came from, for the manifest."""


class CheckpointWeights:
    """Weights streamed from checkpoint files (`sama_rt.models.checkpoint.CheckpointIndex`)."""

    def __init__(self, index):
        self.index = index

    def get(self, name: str) -> Optional[torch.Tensor]:
        return self.index.get(name) if name in self.index else None

    def describe(self) -> dict:
        return {"files": [{"path": str(f), "bytes": f.stat().st_size} for f in self.index.files()]}


class ModuleWeights:
    """Weights of an in-memory module (random-weight exports, small models, tests)."""

    def __init__(self, module: torch.nn.Module, origin: str = "in-memory module"):
        self.state = module.state_dict()
        self.origin = origin

    def get(self, name: str) -> Optional[torch.Tensor]:
        return self.state.get(name)

    def describe(self) -> dict:
        return {"origin": self.origin}


@dataclass
class ExportedGraph:
    name: str
    onnx_path: Path
    data_path: Path
    weights_sha256: str
    weights_bytes: int
    num_initializers: int
    opset: int
    export_seconds: float = 0.0


def export_graph(
    module: torch.nn.Module,
    spec: ModelSpec,
    ranges: Mapping[str, AxisRange],
    out_dir: Path,
    *,
    model_dtype: torch.dtype,
    opset: int,
    weights: WeightSource,
    weight_prefix: str = "",
    translation_table: Optional[Mapping[Callable, Callable]] = None,
    finalize: Optional[Callable[[onnx.ModelProto], None]] = None,
    metadata: Optional[Mapping[str, str]] = None,
) -> ExportedGraph:
    """Export `module` (on meta or with real weights) as `<out_dir>/<spec.name>.onnx`.

    The trace runs at `trace_point(ranges)` with fake tensors only. Initializers named
    `weight_prefix + key` are filled from `weights` by `key`; constants the trace produced
    itself keep their values. `finalize` edits the proto before it is saved (e.g. adds
    local functions).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / f"{spec.name}.onnx"
    data_path = out_dir / f"{spec.name}.onnx.data"
    for p in (onnx_path, data_path):
        if p.exists():
            raise ExportError(f"{p} exists; choose an empty output directory or remove it")

    start = time.perf_counter()
    try:
        proto, (sha, total, count) = _trace_and_fill(
            module, spec, ranges, model_dtype, opset, weights, weight_prefix, translation_table, data_path
        )
        if finalize is not None:
            finalize(proto)
        for key, value in (metadata or {}).items():
            proto.metadata_props.add(key=key, value=str(value))
        onnx.save_model(proto, str(onnx_path))
    except BaseException:
        # A half-written graph must not be mistaken for a finished one by a later run.
        for p in (onnx_path, data_path):
            p.unlink(missing_ok=True)
        raise
    seconds = time.perf_counter() - start
    logger.info("%s: %d initializers, %.2f GB in %.1f s", spec.name, count, total / 1e9, seconds)
    return ExportedGraph(spec.name, onnx_path, data_path, sha, total, count, opset, seconds)


def _trace_and_fill(module, spec, ranges, model_dtype, opset, weights, weight_prefix, translation_table, data_path):
    import onnx_ir as ir

    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    point = trace_point(ranges, spec.axes)
    sample = spec.sample_inputs(point, model_dtype)
    args = tuple(t.to(device) for t in sample.values())
    dynamic = spec.torch_dynamic_shapes(ranges)
    logger.info("%s: tracing at %s", spec.name, point)
    with warnings.catch_warnings():
        # The exporter warns for every derived dimension it names itself; we rename them all.
        warnings.filterwarnings("ignore", message=".*The axis name.*will not be used")
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec.*")  # torch-internal
        program = torch.onnx.export(
            module.eval(),
            args,
            input_names=spec.input_names,
            output_names=spec.output_names,
            dynamic_shapes=_structure(module, [dynamic[name] for name in spec.input_names]),
            opset_version=opset,
            dynamo=True,
            optimize=False,
            custom_translation_table=dict(translation_table or {}),
            verbose=False,
        )
    model = program.model
    got_opset = model.opset_imports.get("", None)
    if got_opset != opset:
        raise ExportError(
            f"{spec.name}: asked for opset {opset}, the exporter produced {got_opset} "
            "(torch's dynamo exporter supports opset >= 18)"
        )
    _simplify(model)
    _apply_spec_names(model, spec)
    filled = _write_initializers(model, weights, weight_prefix, data_path, spec.name)
    return ir.serde.serialize_model(model), filled


def _structure(module: torch.nn.Module, per_input: list):
    """dynamic_shapes in the structure of the module's forward arguments (a wrapper with
    varargs, like the VAE steps, groups its trailing inputs)."""
    group = getattr(module, "dynamic_shapes_structure", None)
    return group(per_input) if group is not None else tuple(per_input)


def _simplify(model) -> None:
    """Fold shape arithmetic into constants and apply onnxscript's standard rewrites (e.g.
    SplitToSequence + SequenceAt -> Split), without the exporter's full `optimize=True`:
    that one lifts and deduplicates initializers and renames them, and refit needs the
    state-dict names. Nodes reading a weight are never folded (that would bake the weight
    into an anonymous constant; on the meta device it has no value anyway)."""
    import onnx_ir as ir
    from onnxscript.optimizer import _constant_folding

    # Hide the weights' values while the passes run: then nothing can read them (meta
    # tensors have none) or fold them away; they are restored right after.
    hidden = {v: v.const_value for v in model.graph.initializers.values()}
    for v in hidden:
        v.const_value = None

    def should_fold(node):
        return False if any(v in hidden for v in node.inputs if v is not None) else None

    passes = ir.passes.PassManager(
        [
            _constant_folding.FoldConstantsPass(
                shape_inference=False,
                input_size_limit=_constant_folding.DEFAULT_CONSTANT_FOLD_INPUT_SIZE_LIMIT,
                output_size_limit=_constant_folding.DEFAULT_CONSTANT_FOLD_OUTPUT_SIZE_LIMIT,
                should_fold=should_fold,
            ),
            ir.passes.common.RemoveUnusedNodesPass(),
        ],
        steps=1,
        early_stop=True,
    )
    try:
        passes(model)
    finally:
        for v, const in hidden.items():
            v.const_value = const
    # The exporter's per-node stack traces and scopes are large and say nothing at run time.
    for node in model.graph:
        node.metadata_props.clear()


# -- naming ---------------------------------------------------------------------------------
def _apply_spec_names(model, spec: ModelSpec) -> None:
    """Give the graph's inputs/outputs the spec's dimension names, and check that the
    exporter kept every named dimension symbolic and every fixed one at its value
    (an inconsistent dynamic spec silently exports a static graph)."""
    import onnx_ir as ir

    values = {v.name: v for v in list(model.graph.inputs) + list(model.graph.outputs)}
    renames: dict[str, str] = {}
    for t in spec.inputs + spec.outputs:
        if t.name not in values:
            raise ExportError(f"{spec.name}: the graph has no {t.name!r}; it has {sorted(values)}")
        shape = values[t.name].shape
        if shape is None or len(shape) != len(t.shape):
            raise ExportError(f"{spec.name}: {t.name} has shape {shape}, spec says {t.shape}")
        new_dims = []
        for i, (want, got) in enumerate(zip(t.shape, shape)):
            if isinstance(want, int):
                if got != want:
                    raise ExportError(f"{spec.name}: {t.name} dim {i} is {got}, spec fixes it at {want}")
                new_dims.append(want)
                continue
            if isinstance(got, int) or got.value is None:
                raise ExportError(
                    f"{spec.name}: {t.name} dim {i} ({want}) was exported as {got!r}, not as a "
                    "symbol: the trace specialised it (check the dynamic spec and the trace point)"
                )
            previous = renames.setdefault(got.value, want)
            if previous != want:
                raise ExportError(
                    f"{spec.name}: graph symbol {got.value!r} is both {previous!r} and {want!r} in the spec"
                )
            new_dims.append(ir.SymbolicDim(want))
        values[t.name].shape = ir.Shape(new_dims)
    # Internal values carry the exporter's symbol names; rename the ones we know so the
    # graph speaks one vocabulary (shape inference compares names).
    for node in model.graph:
        for value in node.outputs:
            if value.shape is None or value.name in values:
                continue
            if any(isinstance(d, ir.SymbolicDim) and d.value in renames for d in value.shape):
                value.shape = ir.Shape(
                    [ir.SymbolicDim(renames[d.value]) if isinstance(d, ir.SymbolicDim) and d.value in renames else d
                     for d in value.shape]
                )


# -- weights --------------------------------------------------------------------------------
def _numpy_bytes(tensor: torch.Tensor) -> memoryview:
    """Raw little-endian bytes of a CPU tensor without a second copy (bf16 included)."""
    t = tensor.detach().contiguous()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.view(torch.int16)
    elif t.dtype == torch.bool:
        t = t.view(torch.uint8)
    return memoryview(t.numpy()).cast("B")


def _write_initializers(model, weights: WeightSource, prefix: str, data_path: Path, graph_name: str):
    """Fill every initializer from `weights` (or its own traced value) and append the large
    ones to `data_path`. Returns (sha256 of the data file, bytes, number of initializers)."""
    import onnx_ir as ir

    digest = hashlib.sha256()
    written = 0
    missing, renamed = [], {}
    with open(data_path, "wb") as f:

        def append(raw) -> int:
            nonlocal written
            align = PAGE_ALIGN if len(raw) >= 1 << 20 else SMALL_ALIGN
            pad = (-written) % align
            if pad:
                f.write(b"\0" * pad)
                digest.update(b"\0" * pad)
                written += pad
            f.write(raw)
            digest.update(raw)
            offset, written = written, written + len(raw)
            return offset

        def external(value, key, nbytes, offset):
            return ir.ExternalTensor(
                data_path.name, offset, nbytes, value.dtype,
                shape=value.shape, name=key, base_dir=str(data_path.parent),
            )

        for name, value in list(model.graph.initializers.items()):
            key = name[len(prefix):] if prefix and name.startswith(prefix) else name
            if key != name:
                renamed[name] = key
            tensor = weights.get(key)
            if tensor is None:
                # A constant the trace made itself (folded shapes, lifted tensors): keep
                # its value as is, moved to the data file when large.
                const = value.const_value
                if const is None or _is_meta(const):
                    missing.append(key)
                elif const.nbytes >= INLINE_LIMIT_BYTES:
                    value.const_value = external(value, key, const.nbytes, append(const.tobytes()))
                continue
            if tuple(tensor.shape) != tuple(value.shape.numpy()):
                raise ExportError(
                    f"{graph_name}: weight {key} has shape {list(tensor.shape)}, graph expects {list(value.shape.numpy())}"
                )
            tensor = tensor.to(dtype=_torch_dtype(value.dtype), device="cpu")
            raw = _numpy_bytes(tensor)
            if raw.nbytes < INLINE_LIMIT_BYTES:
                value.const_value = _inline_tensor(tensor, value.dtype, key)
            else:
                value.const_value = external(value, key, raw.nbytes, append(raw))
            del tensor, raw
    if missing:
        raise ExportError(
            f"{graph_name}: no weight for {len(missing)} initializer(s): {', '.join(missing[:20])}"
            + (" ..." if len(missing) > 20 else "")
        )
    for old, new in renamed.items():  # after the loop: renaming reorders the mapping
        value = model.graph.initializers.pop(old)
        value.name = new
        model.graph.initializers[new] = value
    if written == 0:
        data_path.unlink()
    return digest.hexdigest(), written, len(model.graph.initializers)


def _is_meta(const) -> bool:
    raw = getattr(const, "raw", None)
    return isinstance(raw, torch.Tensor) and raw.is_meta


_IR_TO_TORCH = {
    "FLOAT": torch.float32, "FLOAT16": torch.float16, "BFLOAT16": torch.bfloat16, "DOUBLE": torch.float64,
    "INT64": torch.int64, "INT32": torch.int32, "INT8": torch.int8, "UINT8": torch.uint8, "BOOL": torch.bool,
}


def _torch_dtype(ir_dtype) -> torch.dtype:
    try:
        return _IR_TO_TORCH[ir_dtype.name]
    except KeyError:
        raise ExportError(f"initializer dtype {ir_dtype} is not supported by the weight writer") from None


def _inline_tensor(tensor: torch.Tensor, ir_dtype, name: str):
    import onnx_ir as ir

    if tensor.dtype == torch.bfloat16:
        # numpy has no bfloat16: hand over the 16-bit patterns with the real dtype.
        bits = tensor.contiguous().view(torch.uint16).numpy().copy()
        return ir.Tensor(bits, dtype=ir_dtype, name=name)
    return ir.Tensor(tensor.contiguous().numpy().copy(), dtype=ir_dtype, name=name)
