"""Attention backend selection: one pure choice, with reasons and a safe default."""
import pytest
import torch

from sama_rt.models import attention
from sama_rt.models.attention import AttentionBackend, select_attention_backend, triton_self_check


def test_explicit_and_auto_on_cpu():
    assert select_attention_backend("auto", "cpu") is AttentionBackend.SDPA
    assert select_attention_backend("reference", "cpu") is AttentionBackend.REFERENCE
    with pytest.raises(ValueError, match="valid: reference, sdpa, triton, auto"):
        select_attention_backend("flash", "cpu")


def test_self_check_passes_in_the_interpreter_fp32():
    # tests/conftest.py runs the kernel under TRITON_INTERPRET=1 on CPU (fp32 is reliable there).
    ok, why = triton_self_check("cpu", 48, torch.float32)
    assert ok, why


def test_broken_kernel_falls_back_to_sdpa_on_cuda(monkeypatch):
    monkeypatch.setattr(attention, "triton_available", lambda: (True, "pretend"))
    monkeypatch.setattr(attention, "_SELF_CHECKS", {("cuda", 128, torch.bfloat16): (False, "broken build")})
    assert select_attention_backend("auto", "cuda", 128, torch.bfloat16) is AttentionBackend.SDPA
    monkeypatch.setattr(attention, "_SELF_CHECKS", {("cuda", 128, torch.bfloat16): (True, "ok")})
    assert select_attention_backend("auto", "cuda", 128, torch.bfloat16) is AttentionBackend.TRITON


def test_self_check_reports_a_failing_kernel(monkeypatch):
    import sama_rt.kernels as kernels

    def boom(*args, **kwargs):
        raise RuntimeError("no kernel image for this GPU")

    monkeypatch.setattr(kernels, "anchor_attention", boom)
    monkeypatch.setattr(attention, "_SELF_CHECKS", {})
    ok, why = triton_self_check("cpu", 48, torch.float32)
    assert not ok and "no kernel image" in why
