"""Free-memory checks before building weights (sama_rt.device_memory)."""
import pytest
import torch

from sama_rt import device_memory
from sama_rt.models import DiTConfig, build_dit


def test_cpu_free_memory_is_read():
    free = device_memory.available_bytes("cpu")
    assert free is None or free > 2**20  # Linux: MemAvailable; elsewhere unknown
    assert device_memory.available_bytes("meta") is None


def test_random_weights_that_do_not_fit_are_refused_before_allocating(monkeypatch):
    seen = []

    def tiny_free(device):
        seen.append(torch.device(device))
        return 10 * 2**20  # 10 MiB

    monkeypatch.setattr(device_memory, "available_bytes", tiny_free)
    with pytest.raises(MemoryError, match=r"SamaDiT \(14\.\d+B parameters in torch.float32\) need 5\d\.\d GiB on cpu.*bfloat16"):
        build_dit(DiTConfig.preset("sama-14b"))  # 53 GiB in float32: refused at once, nothing allocated
    assert seen == [torch.device("cpu")]
    dit = build_dit(DiTConfig.preset("tiny"))  # a few MiB: built
    assert sum(p.numel() for p in dit.parameters()) * 4 < 10 * 2**20


def test_unknown_free_memory_does_not_block(monkeypatch):
    monkeypatch.setattr(device_memory, "available_bytes", lambda device: None)
    device_memory.require_free(2**60, "cpu", "anything")


def test_checkpoint_loading_is_refused_when_the_weights_cannot_fit(monkeypatch):
    from tests.golden import golden_json, golden_path

    cfg = DiTConfig.from_dict(golden_json("tiny_dit.json")["config"])
    monkeypatch.setattr(device_memory, "available_bytes", lambda device: 1024)
    from sama_rt.models import load_dit

    with pytest.raises(MemoryError, match=r"the weights of SamaDiT \(0\.\d+B parameters in torch.float32\) need"):
        load_dit(golden_path("tiny_dit_weights.safetensors"), config=cfg, dtype=torch.float32)
