"""Real cos/sin RoPE tables against the official float64 complex rotation."""
import pytest
import torch

from sama_rt.models.rope import apply_rope, rope_split, rope_tables, sequence_rope_tables


def official_rope(x: torch.Tensor, F: int, H: int, W: int) -> torch.Tensor:
    """The released rotation: complex float64 frequencies per axis, applied per pair."""
    d = x.shape[-1]
    def freqs(c):
        inv = 1.0 / (10000 ** (torch.arange(0, c, 2)[: c // 2].double() / c))
        return torch.polar(torch.ones(1024, c // 2, dtype=torch.float64),
                           torch.outer(torch.arange(1024, dtype=torch.float64), inv))
    ff, fh, fw = freqs(d - 2 * (d // 3)), freqs(d // 3), freqs(d // 3)
    table = torch.cat([
        ff[:F].view(F, 1, 1, -1).expand(F, H, W, -1),
        fh[:H].view(1, H, 1, -1).expand(F, H, W, -1),
        fw[:W].view(1, 1, W, -1).expand(F, H, W, -1),
    ], dim=-1).reshape(F * H * W, 1, -1)
    xc = torch.view_as_complex(x.double().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * table).flatten(-2).to(x.dtype)


@pytest.mark.parametrize("head_dim", [48, 96, 128])
def test_tables_match_complex_float64(head_dim):
    F, H, W = 3, 5, 7
    x = torch.randn(2, F * H * W, 3, head_dim) * 3
    cos, sin = rope_tables(F, H, W, head_dim)
    assert cos.dtype == torch.float32 and cos.shape == (F * H * W, head_dim // 2)
    # float32 arithmetic on |x| ~ 10: a few ulp (1e-6 relative) is all that may differ.
    torch.testing.assert_close(apply_rope(x, cos, sin), official_rope(x, F, H, W), atol=1e-5, rtol=1e-6)


def test_anchor_rows_become_exactly_zero():
    cos, sin = rope_tables(2, 2, 3, 48)
    cos_l, sin_l = sequence_rope_tables(cos, sin, 5)
    x = torch.randn(1, 2 * 12 + 5, 2, 48)
    out = apply_rope(x, cos_l, sin_l)
    assert torch.all(out[:, 12:17] == 0)
    torch.testing.assert_close(out[:, :12], out[:, 17:] * 0 + apply_rope(x[:, :12], cos, sin))
    torch.testing.assert_close(out[:, 17:], apply_rope(x[:, 17:], cos, sin))


def test_split_requires_even_thirds():
    assert rope_split(128) == (44, 42, 42)
    with pytest.raises(ValueError, match="64 does not"):
        rope_split(64)
