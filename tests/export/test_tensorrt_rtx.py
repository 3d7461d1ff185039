"""Optional: TensorRT-RTX (CPU ahead-of-time builder) parses and builds the exported graphs.

Skipped unless `tensorrt-rtx-cu13-bindings` and `-libs` are installed (not part of CI's
dev extra: ~95 MB). It is a TensorRT-family parser, not the datacenter TensorRT.
"""
import pytest

from sama_rt.export import rtx_check
from sama_rt.export.dit import export_dit
from sama_rt.export.options import ExportOptions
from sama_rt.export.spec import ShapeBuckets
from sama_rt.export.text import export_text_encoder
from sama_rt.models.dit import DiTConfig

pytestmark = pytest.mark.skipif(not rtx_check.available(), reason="tensorrt-rtx bindings not installed")

BUCKETS = ShapeBuckets(frames=(5, 9), resolutions=((32, 48), (48, 32)))


def test_dit_parses_and_builds(tmp_path):
    """bf16 at opset 22: the 14B export's defaults."""
    cfg = DiTConfig(dim=96, ffn_dim=192, num_heads=2, num_layers=1, text_dim=64)
    record = export_dit(ExportOptions(tmp_path, buckets=BUCKETS), None, config=cfg, seed=1)
    result = rtx_check.parse_and_build(record.graph.onnx_path, record.spec.profile(record.ranges))
    assert result.parsed and not result.errors, result.errors
    # No plugin is registered here: the AnchorAttention node was inlined from its function.
    assert result.plugin_layers == 0 and result.engine_bytes > 0


def test_text_encoder_parses_and_builds(tmp_path):
    record = export_text_encoder(ExportOptions(tmp_path, dtype="fp16", buckets=BUCKETS), None, config="tiny")
    result = rtx_check.parse_and_build(record.graph.onnx_path, record.spec.profile(record.ranges))
    assert result.parsed and result.engine_bytes > 0, result.errors
