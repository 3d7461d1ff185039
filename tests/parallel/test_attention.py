"""The ring's per-chunk attention (sama_rt.parallel.attention.attention_with_lse): torch's
flash kernel with its log-sum-exp against the exact float32 routine, and the merge of
partials against attention over all keys at once. No process group needed."""
import pytest
import torch

from sama_rt.parallel.attention import _flash_attention_with_lse, attention_with_lse, exact_attention_with_lse, merge_partial

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _qkv(dtype, device, lq=37, lk=50, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(2, n, 3, 48, generator=gen).to(device, dtype) for n in (lq, lk, lk)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_flash_partial_matches_the_exact_routine(device, dtype):
    q, k, v = _qkv(dtype, device)
    fused = _flash_attention_with_lse(q, k, v)
    if fused is None:
        assert device == "cuda" and dtype == torch.float32  # CUDA flash takes 16-bit inputs only
        return
    out, lse = fused
    want_out, want_lse = exact_attention_with_lse(q, k, v)  # float32 math on the same inputs
    assert out.dtype == lse.dtype == torch.float32 and out.shape == q.shape and lse.shape == q.shape[:3]
    # float32: summation order only. bf16: the flash output is rounded to bf16 once (2**-9
    # relative; outputs are means of v rows, |v| < 5), the lse is computed in float32.
    out_tol = 1e-5 if dtype == torch.float32 else 2**-9 * v.abs().max().item()
    torch.testing.assert_close(out, want_out, atol=out_tol, rtol=0)
    torch.testing.assert_close(lse, want_lse, atol=1e-4, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_merged_partials_equal_attention_over_all_keys(device):
    q, k, v = _qkv(torch.float32, device, lk=90, seed=1)
    out = lse = None
    for chunk in (slice(0, 40), slice(40, 41), slice(41, 90)):  # uneven, one single key
        out, lse = merge_partial(out, lse, *attention_with_lse(q, k[:, chunk], v[:, chunk]))
    whole_out, whole_lse = exact_attention_with_lse(q, k, v)
    torch.testing.assert_close(out, whole_out, atol=1e-5, rtol=0)
    torch.testing.assert_close(lse, whole_lse, atol=1e-5, rtol=0)
