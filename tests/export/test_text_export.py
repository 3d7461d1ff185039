"""Text encoder export: the .pth is memory-mapped and streamed; the graph matches torch."""
import numpy as np
import onnx
import pytest
import torch

from sama_rt.export.options import ExportOptions
from sama_rt.export.text import export_text_encoder
from sama_rt.models.text_encoder import TextEncoderConfig, load_text_encoder
from tests.export.conftest import session

# float32 vs float32, same math, different op order: ~2e-6 observed on outputs of
# magnitude ~1; 1e-5 leaves 5x margin. A wrong position bucket or mask changes rows by > 1e-1.
ATOL = 1e-5


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("t5")
    cfg = TextEncoderConfig.preset("tiny")
    torch.manual_seed(11)
    from sama_rt.models.text_encoder import UMT5Encoder

    ckpt = tmp / "umt5.pth"
    torch.save(UMT5Encoder(cfg).state_dict(), str(ckpt))  # a plain state dict, as released
    record = export_text_encoder(ExportOptions(out_dir=tmp / "onnx", dtype="fp32"), ckpt).verify()
    return record, load_text_encoder(ckpt, dtype=torch.float32)


def test_matches_torch_at_two_batch_sizes(exported):
    record, encoder = exported
    assert record.checker == "ok" and record.lint.ok, record.lint.errors
    sess = session(record.graph.onnx_path)
    for batch, seed in ((1, 0), (2, 1)):
        inputs = record.spec.sample_inputs({"batch": batch}, torch.float32, seed=seed)
        (got,) = sess.run(None, {k: v.numpy() for k, v in inputs.items()})
        with torch.no_grad():
            want = encoder(inputs["ids"], inputs["mask"])
        assert got.shape == (batch, 512, encoder.config.dim)
        np.testing.assert_allclose(got, want.numpy(), atol=ATOL, rtol=0)
        padding = inputs["mask"].numpy() == 0
        assert np.all(got[padding] == 0)  # the DiT sees exact zeros past each prompt


def test_names(exported):
    record, encoder = exported
    proto = onnx.load(str(record.graph.onnx_path), load_external_data=False)
    (ids,) = [i for i in proto.graph.input if i.name == "ids"]
    assert [d.dim_param or d.dim_value for d in ids.type.tensor_type.shape.dim] == ["batch", 512]
    assert set(encoder.state_dict()) <= {t.name for t in proto.graph.initializer}
