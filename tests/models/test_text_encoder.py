"""umT5 encoder: golden parity, masking, config inference and strict loading."""
from __future__ import annotations

import math
import re

import pytest
import torch
from safetensors.torch import save_file

from sama_rt.models.checkpoint import CheckpointError
from sama_rt.models.text_encoder import (
    TextEncoderConfig,
    UMT5Encoder,
    encode_prompts,
    load_text_encoder,
    relative_position_buckets,
)
from sama_rt.models.tokenizer import PromptTokenizer

from ..golden import golden_json, golden_path, golden_tensors
from sama_rt.models.tiny_tokenizer import train_tiny_sentencepiece


@pytest.fixture(scope="module")
def golden_io() -> dict:
    return golden_tensors("tiny_t5_io.safetensors")


@pytest.fixture(scope="module")
def encoder() -> UMT5Encoder:
    return load_text_encoder(golden_path("tiny_t5.pth"), dtype=torch.float32)


@pytest.fixture(scope="module")
def golden_state() -> dict:
    return torch.load(golden_path("tiny_t5.pth"), weights_only=True)


# -- golden parity ---------------------------------------------------------------------
# float32 against the official float32 run: only the summation order differs (fused
# attention instead of two einsums, softmax over the real keys only in `forward`).
# Measured max error 1.5e-6 on outputs of magnitude ~3; 1e-5 leaves room for other CPUs.
F32_ATOL = F32_RTOL = 1e-5


def test_encoder_out_matches_golden(encoder, golden_io):
    with torch.no_grad():
        out = encoder.encode_raw(golden_io["ids"], golden_io["mask"])
    torch.testing.assert_close(out, golden_io["encoder_out"], atol=F32_ATOL, rtol=F32_RTOL)


def test_context_matches_golden(encoder, golden_io):
    n_real = golden_json("tiny_t5.json")["n_real_tokens"]
    assert int(golden_io["mask"].sum()) == n_real
    with torch.no_grad():
        context = encoder(golden_io["ids"], golden_io["mask"])
    torch.testing.assert_close(context, golden_io["context"], atol=F32_ATOL, rtol=F32_RTOL)
    assert torch.count_nonzero(context[0, n_real:]) == 0
    assert torch.count_nonzero(context[0, :n_real].abs().sum(-1)) == n_real


def _release_style_forward(state: dict, config: TextEncoderConfig, ids, mask, dtype):
    """The release's computation with its dtype flow, written plainly: einsum attention
    in the model dtype, softmax in float32, manual GELU-tanh, buckets in float64."""
    w = {k: v.to(dtype) for k, v in state.items()}
    length, heads = ids.shape[1], config.num_heads
    rel = torch.arange(length)[None, :] - torch.arange(length)[:, None]
    half, exact = config.num_buckets // 2, config.num_buckets // 4
    dist = rel.abs()
    far = exact + (
        torch.log(dist.clamp(min=1).double() / exact) / math.log(config.max_distance / exact) * (half - exact)
    ).floor().long()
    buckets = (rel > 0).long() * half + torch.where(dist < exact, dist, far.clamp(max=half - 1))

    def norm(x, weight):
        x = x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + config.eps)
        return weight * x.to(weight.dtype)

    def gelu(x):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))

    x = w["token_embedding.weight"][ids]
    for i in range(config.num_layers):
        p = f"blocks.{i}."
        bias = w[p + "pos_embedding.embedding.weight"][buckets].permute(2, 0, 1)[None]
        bias = bias.masked_fill(mask.view(1, 1, 1, -1) == 0, torch.finfo(dtype).min)
        h = norm(x, w[p + "norm1.weight"])
        q, k, v = (
            (h @ w[p + f"attn.{n}.weight"].T).view(1, length, heads, -1) for n in "qkv"
        )
        logits = torch.einsum("binc,bjnc->bnij", q, k) + bias
        attn = torch.softmax(logits.float(), dim=-1).to(dtype)
        h = torch.einsum("bnij,bjnc->binc", attn, v).reshape(1, length, -1)
        x = x + h @ w[p + "attn.o.weight"].T
        h = norm(x, w[p + "norm2.weight"])
        h = (h @ w[p + "ffn.fc1.weight"].T) * gelu(h @ w[p + "ffn.gate.0.weight"].T)
        x = x + h @ w[p + "ffn.fc2.weight"].T
    return norm(x, w["norm.weight"])


def test_release_style_reference_is_the_golden(golden_state, golden_io):
    # Validates the bf16 yardstick below: in float32 it reproduces the golden.
    config = TextEncoderConfig.preset("tiny")
    ref = _release_style_forward(golden_state, config, golden_io["ids"], golden_io["mask"], torch.float32)
    torch.testing.assert_close(ref, golden_io["encoder_out"], atol=F32_ATOL, rtol=F32_RTOL)


def test_bf16_error_within_release_bf16_error(golden_state, golden_io):
    # The release runs umT5 in bf16. Our bf16 error against the float32 golden must be at
    # most twice the release's own bf16 error (computed above) plus one bf16 step of the
    # output magnitude (2^-8 * ~3): different but equally valid roundings.
    config = TextEncoderConfig.preset("tiny")
    ids, mask = golden_io["ids"], golden_io["mask"]
    truth = golden_io["encoder_out"]
    release = _release_style_forward(golden_state, config, ids, mask, torch.bfloat16).float()
    bf16 = load_text_encoder(golden_path("tiny_t5.pth"), dtype=torch.bfloat16)
    with torch.no_grad():
        ours = bf16.encode_raw(ids, mask)
    assert ours.dtype == torch.bfloat16
    release_err = (release - truth).abs().max().item()
    ours_err = (ours.float() - truth).abs().max().item()
    assert 0 < ours_err <= 2 * release_err + 2**-8 * truth.abs().max().item()


# -- masking and batching --------------------------------------------------------------
def test_batch_rows_are_independent_and_padding_free(encoder, golden_io):
    length = 40
    ids_a, mask_a = golden_io["ids"][:, :length], golden_io["mask"][:, :length]  # 19 real
    gen = torch.Generator().manual_seed(0)
    ids_b = torch.zeros(1, length, dtype=torch.long)
    ids_b[0, :6] = torch.randint(3, 512, (6,), generator=gen)
    ids_b[0, 6] = 1  # EOS
    mask_b = (ids_b != 0).long()
    with torch.no_grad():
        batch = encoder(torch.cat([ids_a, ids_b]), torch.cat([mask_a, mask_b]))
        alone_a = encoder(ids_a, mask_a)
        alone_b = encoder(ids_b, mask_b)
        raw_b = encoder.encode_raw(ids_b, mask_b)
    torch.testing.assert_close(batch[0:1], alone_a, atol=F32_ATOL, rtol=F32_RTOL)
    torch.testing.assert_close(batch[1:2], alone_b, atol=F32_ATOL, rtol=F32_RTOL)
    # Shorter inputs give the same real rows as the 512-long golden: padding has no effect.
    torch.testing.assert_close(alone_a[0, :19], golden_io["context"][0, :19], atol=F32_ATOL, rtol=F32_RTOL)
    torch.testing.assert_close(alone_b[0, :7], raw_b[0, :7], atol=F32_ATOL, rtol=F32_RTOL)
    assert torch.count_nonzero(batch[1, 7:]) == 0 and torch.count_nonzero(raw_b[0, 7:]) > 0


def test_left_padded_mask_is_refused(encoder):
    ids = torch.tensor([[0, 0, 5, 1]])
    with pytest.raises(ValueError, match="right-padded"):
        encoder(ids, (ids != 0).long())


def test_relative_position_buckets():
    buckets = relative_position_buckets(600, 32, 128)
    offset = 599  # row 599 is the query; column c is the key at relative position c - 599

    def bucket(rel: int) -> int:
        return int(buckets[offset, offset + rel]) if rel <= 0 else int(buckets[0, rel])

    # Exact buckets below 8 in each direction; keys after the query use buckets 16..31.
    assert [bucket(r) for r in range(-7, 1)] == [7, 6, 5, 4, 3, 2, 1, 0]
    assert [bucket(r) for r in (1, 7)] == [17, 23]
    # Logarithmic beyond: 8 * 16^(k/8) starts bucket 8 + k, all >= 128 share the last.
    assert [bucket(-r) for r in (8, 11, 12, 15, 16, 22, 23, 32, 64, 90, 91, 128, 599)] == [
        8, 8, 9, 9, 10, 10, 11, 12, 14, 14, 15, 15, 15,
    ]
    assert bucket(16) == 26 and bucket(599) == 31
    # Depends only on the relative position.
    assert torch.equal(buckets[1:, 1:], buckets[:-1, :-1])


# -- configs ---------------------------------------------------------------------------
def test_config_from_golden_json_and_presets():
    assert TextEncoderConfig.from_dict(golden_json("tiny_t5.json")["config"]) == TextEncoderConfig.preset("tiny")
    xxl = TextEncoderConfig.preset("sama-14b")
    assert (xxl.vocab, xxl.dim, xxl.dim_ffn, xxl.num_heads, xxl.num_layers, xxl.head_dim) == (
        256384, 4096, 10240, 64, 24, 64,
    )
    with pytest.raises(ValueError, match="shared_pos"):
        TextEncoderConfig.from_dict({"dim": 64, "shared_pos": True})
    with pytest.raises(ValueError, match="unknown text encoder config key"):
        TextEncoderConfig.from_dict({"dim": 64, "dropout": 0.1})
    with pytest.raises(ValueError, match="valid"):
        TextEncoderConfig.preset("umt5-base")
    with pytest.raises(ValueError, match="divisible"):
        TextEncoderConfig(dim_attn=100, num_heads=64)


def _xxl_shapes(layers: int = 24) -> dict:
    shapes = {"token_embedding.weight": (256384, 4096), "norm.weight": (4096,)}
    for i in range(layers):
        p = f"blocks.{i}."
        shapes.update({
            p + "norm1.weight": (4096,), p + "norm2.weight": (4096,),
            **{p + f"attn.{n}.weight": (4096, 4096) for n in "qkvo"},
            p + "ffn.gate.0.weight": (10240, 4096), p + "ffn.fc1.weight": (10240, 4096),
            p + "ffn.fc2.weight": (4096, 10240), p + "pos_embedding.embedding.weight": (32, 64),
        })
    return shapes


def test_config_from_state_dict(golden_state):
    assert TextEncoderConfig.from_state_dict(golden_state) == TextEncoderConfig.preset("tiny")
    assert TextEncoderConfig.from_state_dict(golden_state, num_heads=4) == TextEncoderConfig.preset("tiny")
    assert TextEncoderConfig.from_state_dict(_xxl_shapes()) == TextEncoderConfig.preset("sama-14b")
    with pytest.raises(ValueError, match="num_heads=8"):
        TextEncoderConfig.from_state_dict(golden_state, num_heads=8)
    shared = {k: v for k, v in _xxl_shapes(2).items() if "pos_embedding" not in k}
    shared["pos_embedding.embedding.weight"] = (32, 64)
    with pytest.raises(ValueError, match="shared position table"):
        TextEncoderConfig.from_state_dict(shared)
    gap = {k: v for k, v in _xxl_shapes(3).items() if not k.startswith("blocks.1.")}
    with pytest.raises(ValueError, match="not contiguous"):
        TextEncoderConfig.from_state_dict(gap)


# -- strict loading --------------------------------------------------------------------
def test_missing_key_is_named(golden_state, tmp_path):
    state = dict(golden_state)
    del state["blocks.1.ffn.fc2.weight"]
    path = tmp_path / "missing.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"missing: blocks\.1\.ffn\.fc2\.weight"):
        load_text_encoder(path, TextEncoderConfig.preset("tiny"), dtype=torch.float32)


def test_unexpected_key_is_named(golden_state, tmp_path):
    state = dict(golden_state)
    state["blocks.0.attn.q.bias"] = torch.zeros(64)
    path = tmp_path / "extra.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=re.escape("unexpected: blocks.0.attn.q.bias")):
        load_text_encoder(path, dtype=torch.float32)


def test_wrong_config_is_a_shape_error(tmp_path):
    config = TextEncoderConfig.preset("tiny")
    wrong = TextEncoderConfig(**{**config.__dict__, "dim_ffn": 128})
    with pytest.raises(CheckpointError, match=r"shape: blocks\.0\.ffn\.fc1\.weight"):
        load_text_encoder(golden_path("tiny_t5.pth"), wrong, dtype=torch.float32)


def test_loaded_in_requested_dtype_without_meta_tensors(golden_io):
    enc = load_text_encoder(golden_path("tiny_t5.pth"), dtype=torch.bfloat16)
    tensors = list(enc.parameters()) + list(enc.buffers())
    assert all(t.dtype == torch.bfloat16 and not t.is_meta and not t.requires_grad for t in tensors)
    assert not enc.training


# -- prompts end to end ----------------------------------------------------------------
def test_encode_prompts(encoder, tmp_path):
    tok = PromptTokenizer.from_pretrained(train_tiny_sentencepiece(tmp_path))
    prompts = ["[Video edit] make the sky red", "[Video edit]"]
    context = encode_prompts(tok, encoder, prompts, max_length=32)
    ids, mask = tok(prompts, max_length=32)
    with torch.no_grad():
        raw = encoder.encode_raw(ids, mask)
    assert context.shape == (2, 32, 64)
    for row, n in enumerate(mask.sum(1).tolist()):
        torch.testing.assert_close(context[row, :n], raw[row, :n], atol=F32_ATOL, rtol=F32_RTOL)
        assert torch.count_nonzero(context[row, n:]) == 0
