"""Parse and build an exported graph with TensorRT-RTX, which runs ahead-of-time on CPU.

TensorRT-RTX (`tensorrt-rtx-cu13-bindings` + `tensorrt-rtx-cu13-libs` on PyPI) is a
TensorRT-family ONNX parser and builder that needs no GPU to build. It is not the
datacenter TensorRT our engines use, but a graph it parses and builds has no op, type or
shape construct the TensorRT parser family rejects. Optional: nothing else imports it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

logger = logging.getLogger(__name__)


@dataclass
class RtxResult:
    parsed: bool
    errors: list[str] = field(default_factory=list)
    layers: int = 0
    plugin_layers: int = 0
    engine_bytes: int = 0


def available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorrt_rtx_bindings") is not None


def parse_and_build(onnx_path: Path, profile: Mapping[str, Mapping[str, list]], build: bool = True) -> RtxResult:
    """Parse `onnx_path`; with `build`, build an engine over `profile` ({input: {min, opt,
    max}}, the manifest's spec profile). AnchorAttention nodes become our plugin when it is
    registered and the inlined reference function otherwise."""
    import tensorrt_rtx_bindings as trt

    trt_logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, trt_logger)
    parsed = bool(parser.parse_from_file(str(onnx_path)))
    result = RtxResult(parsed, [str(parser.get_error(i)) for i in range(parser.num_errors)])
    layer_types = [str(network.get_layer(i).type) for i in range(network.num_layers)]
    result.layers = len(layer_types)
    result.plugin_layers = sum("PLUGIN" in t for t in layer_types)
    if not (parsed and build):
        return result
    config = builder.create_builder_config()
    optimization = builder.create_optimization_profile()
    for name, shapes in profile.items():
        optimization.set_shape(name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(optimization)
    engine = builder.build_serialized_network(network, config)
    result.engine_bytes = 0 if engine is None else int(engine.nbytes)
    if engine is None:
        result.errors.append("build_serialized_network returned no engine")
    return result
