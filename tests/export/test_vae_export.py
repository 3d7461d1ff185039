"""VAE chunk steps: the runtime loop over the four graphs reproduces encode/decode."""
import numpy as np
import pytest
import torch

from sama_rt.export.options import ExportOptions
from sama_rt.export.spec import ShapeBuckets
from sama_rt.export.vae import decode_in_chunks, encode_in_chunks, export_vae
from sama_rt.models.vae import VAEConfig, WanVAE, load_vae
from tests.export.conftest import session

# The release architecture in miniature (2x spatial, 2x temporal, one of each block kind
# but the 2-D resamplers), so that four traces stay fast in CI. float32 throughout: the
# chunked graphs and the chunked torch model do the same convolutions in another order,
# ~1e-6 observed; 2e-5 leaves margin, a wrong cache slot or order gives errors > 1e-2.
CONFIG = VAEConfig(dim=4, dim_mult=(1, 2), num_res_blocks=1, temporal_downsample=(True,))
ATOL = 2e-5


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vae")
    torch.manual_seed(7)
    vae = WanVAE(CONFIG).eval()
    with torch.no_grad():  # non-trivial norms and biases
        for p in vae.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ckpt = tmp / "vae.pth"
    torch.save(vae.state_dict(), str(ckpt))
    # Latent sizes 4..6 x 4..6.
    options = ExportOptions(out_dir=tmp / "onnx", dtype="fp32", buckets=ShapeBuckets(
        frames=(5, 9), resolutions=((8, 12), (12, 8)), temporal_factor=2, spatial_factor=2))
    records = {r.spec.notes["step"]: r.verify() for r in export_vae(options, ckpt, config=CONFIG)}
    sessions = {step: session(r.graph.onnx_path) for step, r in records.items()}

    def run(step, feeds):
        return sessions[step].run(None, {k: np.ascontiguousarray(v) for k, v in feeds.items()})

    return records, load_vae(ckpt, config=CONFIG), run


@pytest.mark.parametrize("height,width,frames", [(8, 12, 5), (12, 8, 7)])
def test_encode_decode_loop_matches_torch(exported, height, width, frames):
    records, vae, run = exported
    for r in records.values():
        assert r.checker == "ok" and r.lint.ok, (r.spec.name, r.lint.errors)
    gen = torch.Generator().manual_seed(height)
    video = torch.rand(1, 3, frames, height, width, generator=gen) * 2 - 1
    latents = np.concatenate(encode_in_chunks(run, video.numpy(), vae.config.temporal_factor), axis=2)
    want = vae.encode(video)
    np.testing.assert_allclose(latents, want.numpy(), atol=ATOL, rtol=0)
    decoded = np.concatenate(decode_in_chunks(run, want.numpy()), axis=2)
    np.testing.assert_allclose(np.clip(decoded, -1, 1), vae.decode(want).numpy(), atol=ATOL, rtol=0)


def test_cache_signature_is_closed(exported):
    records, _, _ = exported
    for direction in ("encoder", "decoder"):
        first, chunk = records[f"{direction}_first"].spec, records[f"{direction}_chunk"].spec
        produced = [(t.shape, t.dtype) for t in first.outputs[1:]]
        assert produced == [(t.shape, t.dtype) for t in chunk.inputs[1:]]
        assert produced == [(t.shape, t.dtype) for t in chunk.outputs[1:]]
