"""ParallelConfig and the shard layout: pure logic, no processes."""
import pytest
import torch

from sama_rt.parallel import ParallelConfig, ParallelConfigError
from sama_rt.parallel.layout import ShardLayout


def test_world_size_is_the_product_of_the_degrees():
    assert ParallelConfig().world_size == 1
    assert ParallelConfig(ulysses=4, ring=2).world_size == 8
    assert ParallelConfig(ulysses=2, ring=3, cfg=True).world_size == 12


def test_validate_names_both_numbers_of_a_mismatch():
    with pytest.raises(ParallelConfigError, match=r"ulysses 2 x ring 2 x cfg-parallel = 8 processes, but 4 processes"):
        ParallelConfig(ulysses=2, ring=2, cfg=True).validate(num_heads=40, world_size=4)


def test_validate_refuses_a_ulysses_degree_that_does_not_divide_the_heads():
    with pytest.raises(ParallelConfigError, match="--ulysses 3 does not divide the model's 40 attention heads"):
        ParallelConfig(ulysses=3).validate(num_heads=40, world_size=3)
    ParallelConfig(ulysses=8).validate(num_heads=40, world_size=8)
    ParallelConfig(ring=3).validate(num_heads=40, world_size=3)  # ring takes any head count


@pytest.mark.parametrize("kwargs", [{"ulysses": 0}, {"ring": -1}, {"ulysses": 2.0}, {"cfg": 1}, {"timeout_s": 0}])
def test_invalid_values_are_refused(kwargs):
    with pytest.raises(ParallelConfigError):
        ParallelConfig(**kwargs)


@pytest.mark.parametrize("length,shards", [(89, 2), (89, 4), (89, 7), (3, 4), (65, 1)])
def test_layout_shards_cover_the_sequence_once_with_zero_padding(length, shards):
    layout = ShardLayout(length, shards)
    assert layout.padded_length % shards == 0 and 0 <= layout.padded_length - length < shards
    # Three segments like [source | anchors | target]; rows numbered 1..length.
    rows = torch.arange(1, length + 1, dtype=torch.float32)[None, :, None]
    cut = [length // 3, length - 2 * (length // 3)]
    segments = list(rows.split([cut[0], cut[1], length - cut[0] - cut[1]], dim=1))
    pieces = [layout.take(segments, i) for i in range(shards)]
    assert all(p.shape[1] == layout.shard_length for p in pieces)
    whole = torch.cat(pieces, dim=1)
    torch.testing.assert_close(whole[:, :length], rows, atol=0, rtol=0)
    assert not whole[:, length:].any()
    valid = sum(layout.valid_rows(layout.bounds(i)[0], layout.shard_length) for i in range(shards))
    assert valid == length
