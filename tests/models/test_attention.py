"""Attention backend selection: one pure choice, with reasons and a safe default."""
import os

import pytest
import torch

from sama_rt.models import attention
from sama_rt.models.attention import (
    AttentionBackend, anchor_self_attention, attention_backend_names, select_attention_backend, triton_self_check,
)


def test_explicit_and_auto_on_cpu():
    assert select_attention_backend("auto", "cpu") is AttentionBackend.SDPA
    assert select_attention_backend("reference", "cpu") is AttentionBackend.REFERENCE
    with pytest.raises(ValueError, match="valid: reference, sdpa, triton, triton-in-loop, triton-fp8, triton-copies, "
                                         "triton-fp8-copies, triton-gluon, triton-gluon-ws, triton-gluon-ws-fp8, auto"):
        select_attention_backend("flash", "cpu")


# Backends whose kernel hung in this run's sweep (scripts/gpu_checks.sh sets this on a GPU):
# their GPU checks here are left out rather than hang the whole test section.
HUNG_BACKENDS = set(filter(None, os.environ.get("SAMA_RT_HUNG_BACKENDS", "").split(",")))


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the kernel runs compiled: see the CUDA self-check test")
def test_self_check_passes_in_the_interpreter_fp32():
    # tests/conftest.py runs the kernel under TRITON_INTERPRET=1 on CPU (fp32 is reliable there).
    ok, why = triton_self_check("cpu", 48, torch.float32)
    assert ok, why


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the compiled kernel needs a CUDA GPU")
def test_self_check_passes_compiled_on_cuda_bf16():
    backends = [AttentionBackend.TRITON, AttentionBackend.TRITON_IN_LOOP]
    if torch.cuda.get_device_capability() >= (9, 0):
        backends += [AttentionBackend.TRITON_COPIES, AttentionBackend.TRITON_FP8_COPIES, AttentionBackend.TRITON_GLUON,
                     AttentionBackend.TRITON_GLUON_WS, AttentionBackend.TRITON_GLUON_WS_FP8]
    for backend in (b for b in backends if b.value not in HUNG_BACKENDS):
        ok, why = triton_self_check("cuda", 128, torch.bfloat16, backend)
        assert ok, (backend, why)


def test_self_check_runs_the_backends_kernel_variant(monkeypatch):
    """Each Triton backend checks the kernel as it will run it; a variant that breaks fails
    its own check, not the others'."""
    import sama_rt.kernels as kernels

    real = kernels.anchor_attention

    def once_broken(*args, keys="in-loop", **kwargs):
        out = real(*args, keys=keys, **kwargs)
        return out + 1 if keys == "once" else out

    monkeypatch.setattr(kernels, "anchor_attention", once_broken)
    monkeypatch.setattr(attention, "_SELF_CHECKS", {})
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype, head_dim = (torch.bfloat16, 128) if device == "cuda" else (torch.float32, 48)
    assert triton_self_check(device, head_dim, dtype, AttentionBackend.TRITON_IN_LOOP)[0]
    ok, why = triton_self_check(device, head_dim, dtype, AttentionBackend.TRITON)
    assert not ok and "too large" in why


def _pretend_gpu(monkeypatch, capability, checks):
    """A CUDA device of `capability` whose kernel self-checks give `checks` (only the choice
    among backends is tested here; the kernels themselves are tested on a GPU)."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(attention, "triton_available", lambda: (True, "pretend"))
    monkeypatch.setattr(attention, "_SELF_CHECKS", checks)


def test_auto_runs_the_warp_specialised_kernel_on_hopper_at_the_measured_shape(monkeypatch):
    # Measured on an H200: faster than torch's default SDPA (cuDNN) there, docs/BENCHMARKS.md.
    ws = AttentionBackend.TRITON_GLUON_WS
    _pretend_gpu(monkeypatch, (9, 0), {("cuda", 128, dtype, ws): (True, "ok") for dtype in (torch.bfloat16,
                                                                                            torch.float16)})
    assert select_attention_backend("auto", "cuda", 128, torch.bfloat16) is ws
    assert select_attention_backend("auto", "cuda", 128, torch.float16) is ws
    # Not measured (or not possible) elsewhere: SDPA.
    assert select_attention_backend("auto", "cuda", 64, torch.bfloat16) is AttentionBackend.SDPA
    assert select_attention_backend("auto", "cuda", 128, torch.float32) is AttentionBackend.SDPA
    assert select_attention_backend("auto", "cpu", 128, torch.bfloat16) is AttentionBackend.SDPA


@pytest.mark.parametrize("capability", [(8, 0), (8, 9), (10, 0), (12, 0)])
def test_auto_is_sdpa_off_hopper_even_with_a_working_kernel(monkeypatch, capability):
    # The Gluon kernel is Hopper's instructions; the Triton loops lost to cuDNN on an H100.
    _pretend_gpu(monkeypatch, capability, {("cuda", 128, torch.bfloat16, backend): (True, "ok")
                                           for backend in AttentionBackend if backend.uses_triton})
    assert select_attention_backend("auto", "cuda", 128, torch.bfloat16) is AttentionBackend.SDPA
    assert select_attention_backend("triton", "cuda", 128, torch.bfloat16) is AttentionBackend.TRITON


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0),
                    reason="auto runs the fused kernel on a Hopper GPU only")
def test_auto_runs_the_warp_specialised_kernel_on_this_hopper_gpu():
    if AttentionBackend.TRITON_GLUON_WS.value in HUNG_BACKENDS:
        pytest.skip("triton-gluon-ws hung in this run's kernel sweep (SAMA_RT_HUNG_BACKENDS)")
    assert select_attention_backend("auto", "cuda", 128, torch.bfloat16) is AttentionBackend.TRITON_GLUON_WS


def test_auto_falls_back_to_sdpa_with_a_warning_when_the_kernel_fails_its_check(monkeypatch, caplog):
    _pretend_gpu(monkeypatch, (9, 0), {("cuda", 128, torch.bfloat16, AttentionBackend.TRITON_GLUON_WS):
                                       (False, "triton kernel failed its self-check: CompilationError")})
    with caplog.at_level("WARNING", logger=attention.__name__):
        assert select_attention_backend("auto", "cuda", 128, torch.bfloat16) is AttentionBackend.SDPA
    assert "CompilationError" in caplog.text


def test_explicit_triton_with_a_broken_kernel_fails_loudly_on_cuda(monkeypatch):
    _pretend_gpu(monkeypatch, (9, 0), {("cuda", 128, torch.bfloat16, backend): (False, "broken build")
                                       for backend in AttentionBackend if backend.uses_triton})
    for name in ("triton", "triton-in-loop", "triton-fp8", "triton-copies", "triton-fp8-copies", "triton-gluon",
                 "triton-gluon-ws", "triton-gluon-ws-fp8"):
        with pytest.raises(RuntimeError, match=f"'{name}' cannot run here: broken build"):
            select_attention_backend(name, "cuda", 128, torch.bfloat16)
    assert select_attention_backend("auto", "cuda", 128, torch.bfloat16) is AttentionBackend.SDPA


def test_copies_backends_refuse_a_head_dim_their_descriptors_cannot_take():
    """The kernels over copies read them by tensor descriptors (power-of-two rows): a model
    with head_dim 48 is refused when the backend is chosen, with the reason, instead of
    failing inside the first step; 128 (the real model) is accepted."""
    for name, least in (("triton-copies", 16), ("triton-fp8-copies", 32), ("triton-gluon", 16),
                        ("triton-gluon-ws", 16), ("triton-gluon-ws-fp8", 32)):
        with pytest.raises(RuntimeError, match=f"cannot run here: .*power-of-two head_dim >= {least} .*is 48"):
            select_attention_backend(name, "cpu", 48, torch.float32)
    if not torch.cuda.is_available():  # the interpreter runs the Triton forms at 128
        assert select_attention_backend("triton-fp8-copies", "cpu", 128) is AttentionBackend.TRITON_FP8_COPIES
        assert select_attention_backend("triton-copies", "cpu", 128) is AttentionBackend.TRITON_COPIES
        assert select_attention_backend("triton-fp8", "cpu", 48) is AttentionBackend.TRITON_FP8  # any even head_dim


def test_gluon_backend_needs_a_hopper_gpu():
    """Gluon kernels have no interpreter: off CUDA the backend is refused when chosen, with the
    reason, rather than failing inside the first denoising step."""
    if torch.cuda.is_available():
        pytest.skip("on a GPU the backend is chosen after its self-check (test_self_check_passes_compiled_on_cuda_bf16)")
    for name in ("triton-gluon", "triton-gluon-ws", "triton-gluon-ws-fp8"):
        with pytest.raises(RuntimeError, match=f"'{name}' cannot run here: the Gluon kernel runs only compiled"):
            select_attention_backend(name, "cpu")


def test_self_check_reports_a_failing_kernel(monkeypatch):
    import sama_rt.kernels as kernels

    def boom(*args, **kwargs):
        raise RuntimeError("no kernel image for this GPU")

    monkeypatch.setattr(kernels, "anchor_attention", boom)
    monkeypatch.setattr(attention, "_SELF_CHECKS", {})
    ok, why = triton_self_check("cpu", 48, torch.float32)
    assert not ok and "no kernel image" in why


def test_fp8_backend_is_opt_in_and_reaches_the_fp8_kernel():
    """`triton-fp8` is never picked by auto; chosen, it runs the kernel's FP8 path (the same
    numbers as calling the kernel with precision="fp8"), close to the reference."""
    from sama_rt.kernels import anchor_attention, anchor_attention_ref, rope_tables

    assert attention_backend_names() == ["auto", "reference", "sdpa", "triton", "triton-in-loop", "triton-fp8",
                                         "triton-copies", "triton-fp8-copies", "triton-gluon", "triton-gluon-ws",
                                         "triton-gluon-ws-fp8"]
    assert select_attention_backend("triton-fp8", "cpu") is AttentionBackend.TRITON_FP8  # interpreter
    device = "cpu" if not torch.cuda.is_available() else "cuda"
    if device == "cuda" and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("float8 e4m3 needs compute capability 8.9 or newer")
    gen = torch.Generator().manual_seed(3)
    num_anchor, (f, h, w) = 5, (1, 3, 4)
    q, k, v = (torch.randn(1, 2 * f * h * w + num_anchor, 2, 96, generator=gen).to(device, torch.float16)
               for _ in range(3))
    cos, sin = rope_tables(f, h, w, 96, device=device)
    got = anchor_self_attention(q, k, v, cos, sin, num_anchor, AttentionBackend.TRITON_FP8)
    torch.testing.assert_close(got, anchor_attention(q, k, v, cos, sin, num_anchor, precision="fp8"), atol=0, rtol=0)
    want = anchor_attention_ref(q.float(), k.float(), v.float(), cos, sin, num_anchor)
    native = anchor_self_attention(q, k, v, cos, sin, num_anchor, AttentionBackend.TRITON)
    fp8_err = (got.float() - want).abs().max().item()
    # e4m3's 2**-4 relative rounding on q, k, v and p, bounded by max|v| (BENCHMARKS: ~4 % rms);
    # and clearly not the native path (whose error is fp16 rounding).
    assert fp8_err < 2**-4 * v.abs().max().item()
    assert fp8_err > 10 * (native.float() - want).abs().max().item()


@pytest.mark.parametrize("backend, precision, keys, language, head_dim", [
    (AttentionBackend.TRITON, "native", "once", "triton", 48),
    (AttentionBackend.TRITON_IN_LOOP, "native", "in-loop", "triton", 48),
    (AttentionBackend.TRITON_COPIES, "native", "copies", "triton", 128),
    (AttentionBackend.TRITON_GLUON, "native", "copies", "gluon", 128),
    (AttentionBackend.TRITON_GLUON_WS, "native", "copies", "gluon-ws", 128),
    (AttentionBackend.TRITON_GLUON_WS_FP8, "fp8", "copies", "gluon-ws", 128),
])
def test_triton_backends_reach_their_kernel_variant(backend, precision, keys, language, head_dim):
    """`triton` runs the kernel with its keys rotated once (the faster variant), `triton-in-loop`
    with them rotated in its loop, `triton-copies` the rotated-copies kernel (power-of-two
    head_dim, Hopper), `triton-gluon` its Gluon form, `triton-gluon-ws` that form warp-
    specialised and `triton-gluon-ws-fp8` that over e4m3 copies (Hopper, compiled only): the
    same numbers as calling the kernel with that precision, those keys and that language."""
    from sama_rt.kernels import anchor_attention, rope_tables

    assert backend.kernel_options == {"precision": precision, "keys": keys, "language": language}
    assert AttentionBackend.TRITON_FP8.kernel_options == {"precision": "fp8", "keys": "in-loop", "language": "triton"}
    device = "cpu" if not torch.cuda.is_available() else "cuda"
    if keys == "copies" and device == "cuda" and torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("the rotated-copies kernel needs a Hopper GPU (TMA loads)")
    if language.startswith("gluon") and device != "cuda":
        pytest.skip("Gluon kernels run only compiled, on a Hopper GPU (no interpreter)")
    if backend.value in HUNG_BACKENDS:
        pytest.skip(f"{backend.value} hung in this run's kernel sweep (SAMA_RT_HUNG_BACKENDS)")
    gen = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(1, 2 * 12 + 3, 2, head_dim, generator=gen).to(device, torch.float16) for _ in range(3))
    cos, sin = rope_tables(1, 3, 4, head_dim, device=device)
    got = anchor_self_attention(q, k, v, cos, sin, 3, backend)
    want = anchor_attention(q, k, v, cos, sin, 3, precision=precision, keys=keys, language=language)
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_fp8_copies_backend_reaches_the_fp8_copies_kernel():
    """`triton-fp8-copies` runs the FP8 loop over quantized copies (kernels/fp8_copies.py:
    Hopper, or the interpreter): the same numbers as the kernel called with precision="fp8",
    keys="copies", and not the in-loop FP8 kernel's (other key scales)."""
    from sama_rt.kernels import anchor_attention, rope_tables

    backend = AttentionBackend.TRITON_FP8_COPIES
    assert backend.kernel_options == {"precision": "fp8", "keys": "copies", "language": "triton"}
    device = "cpu" if not torch.cuda.is_available() else "cuda"
    if device == "cuda" and torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("the FP8 copies kernel needs a Hopper GPU (TMA loads)")
    gen = torch.Generator().manual_seed(6)
    q, k, v = (torch.randn(1, 2 * 12 + 3, 2, 128, generator=gen).to(device, torch.float16) for _ in range(3))
    cos, sin = rope_tables(1, 3, 4, 128, device=device)
    got = anchor_self_attention(q, k, v, cos, sin, 3, backend)
    torch.testing.assert_close(got, anchor_attention(q, k, v, cos, sin, 3, precision="fp8", keys="copies"), atol=0,
                               rtol=0)
    assert not torch.equal(got, anchor_attention(q, k, v, cos, sin, 3, precision="fp8"))
