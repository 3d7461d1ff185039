"""Export the umT5 text encoder: prompts' token ids -> the DiT's context."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Optional, Union

import torch

from ..models.checkpoint import CheckpointIndex, check_compatible
from ..models.text_encoder import TextEncoderConfig, UMT5Encoder, relative_position_buckets
from .graph import CheckpointWeights, ModuleWeights, export_graph
from .options import ExportOptions
from .record import GraphRecord
from .spec import TEXT_LENGTH, text_ranges, text_spec
from .wrappers import TextEncoderForExport

logger = logging.getLogger(__name__)


def export_text_encoder(
    options: ExportOptions,
    checkpoint: Optional[Union[str, Path]] = None,
    config: Union[TextEncoderConfig, str, None] = None,
    seed: Optional[int] = None,
    module: Optional[UMT5Encoder] = None,
) -> GraphRecord:
    """Export umT5 from its state dict (`models_t5_umt5-xxl-enc-bf16.pth`, memory-mapped)
    or, without one, from seeded random weights of `config`. Traced on the meta device."""
    if isinstance(config, str):
        config = TextEncoderConfig.preset(config)
    if module is not None:
        index, config = None, module.config
        weights = ModuleWeights(module, "in-memory model")
    elif checkpoint is not None:
        index = CheckpointIndex(checkpoint)
        config = config or TextEncoderConfig.from_state_dict(index.shapes())
        weights = CheckpointWeights(index)
    else:
        if config is None:
            raise ValueError("export_text_encoder needs a checkpoint or a config for random weights")
        index = None
        weights = ModuleWeights(_random_encoder(config, seed or 0), f"random weights, seed {seed or 0}")
    with torch.device("meta"):
        model = UMT5Encoder(config).to(options.torch_dtype)
    if index is not None:
        check_compatible(model, index)
    # The bucket table is built on the host and cached; building it here, outside the
    # trace, makes the trace see a real constant (inside the trace it would be a fake
    # tensor, and the cache would keep that fake tensor for later eager calls).
    relative_position_buckets(TEXT_LENGTH, config.num_buckets, config.max_distance)
    spec = text_spec(config)
    ranges = text_ranges(options.buckets)
    graph = export_graph(
        TextEncoderForExport(model), spec, ranges, options.out_dir,
        model_dtype=options.torch_dtype, opset=options.opset, weights=weights,
        weight_prefix=TextEncoderForExport.weight_prefix,
        metadata={"sama_rt.graph": spec.name},
    )
    return GraphRecord(graph, spec, ranges, dataclasses.asdict(config), weights.describe())


def _random_encoder(config: TextEncoderConfig, seed: int) -> UMT5Encoder:
    torch.manual_seed(seed)  # torch's default initialisation, seeded: a demo model, not a trained one
    return UMT5Encoder(config).eval()
