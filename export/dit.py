"""Export the SAMA DiT: one graph for one denoising forward (both CFG passes as batch 2)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from ..models.checkpoint import CheckpointIndex, check_compatible
from ..models.dit import DiTConfig, SamaDiT, build_dit
from . import anchor_op
from .graph import CheckpointWeights, ModuleWeights, export_graph
from .options import ExportOptions
from .record import GraphRecord
from .spec import dit_ranges, dit_spec
from .wrappers import DiTForExport

logger = logging.getLogger(__name__)


def export_dit(
    options: ExportOptions,
    checkpoints: Optional[Sequence[Union[str, Path]]] = None,
    config: Union[DiTConfig, str, None] = None,
    seed: Optional[int] = None,
    module: Optional[SamaDiT] = None,
) -> GraphRecord:
    """Export the DiT from checkpoint files (Wan2.1 shards first, SAMA over them), from an
    in-memory `module`, or, with neither, from seeded random weights of `config`.

    The model is traced on the meta device whatever the source, so the 14B export holds
    no weights in memory; the weights are streamed into the external data afterwards.
    Loading is as strict as `load_dit`: a missing, unexpected or mis-shaped key fails
    before anything is traced.
    """
    if isinstance(config, str):
        config = DiTConfig.preset(config)
    if module is not None:
        index, config = None, module.config
        weights = ModuleWeights(module, "in-memory model")
    elif checkpoints:
        index = CheckpointIndex(list(checkpoints))
        config = config or DiTConfig.from_state_dict(index.shapes())
        weights = CheckpointWeights(index)
    else:
        if config is None:
            raise ValueError("export_dit needs checkpoints or a config for random weights")
        index = None
        weights = ModuleWeights(build_dit(config, seed=seed or 0), f"random weights, seed {seed or 0}")
    with torch.device("meta"):
        model = SamaDiT(config).to(options.torch_dtype)
    if index is not None:
        check_compatible(model, index)
    plugin = options.attention == "plugin"
    spec = dit_spec(config, attention=options.attention)
    ranges = dit_ranges(config, options.buckets)
    graph = export_graph(
        DiTForExport(model, plugin=plugin), spec, ranges, options.out_dir,
        model_dtype=options.torch_dtype, opset=options.opset, weights=weights,
        weight_prefix=DiTForExport.weight_prefix,
        translation_table=anchor_op.TRANSLATION_TABLE if plugin else None,
        finalize=anchor_op.add_function if plugin else None,
        metadata={"sama_rt.graph": spec.name, "sama_rt.attention": options.attention},
    )
    return GraphRecord(graph, spec, ranges, config.to_dict(), weights.describe())
