"""sama_rt.bench: the analytic FLOP count against torch's own FLOP counter, the MFU table,
the backends `sama-rt bench` can time, and its refusals."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from sama_rt.acceleration.runtime import RuntimeOptions
from sama_rt.bench import BenchConfig, bf16_peak_tflops, dit_forward_flops, latent_shape, random_dit_inputs, run_bench, token_grid
from sama_rt.models import DiTConfig, build_dit


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    # torch's counter has no formula for the CPU flash kernel that SDPA dispatches to here.
    return sdpa_flop_count(query_shape, key_shape, value_shape)


@pytest.mark.parametrize("config,frames,height,width,num_anchor,batch", [
    ("tiny", 9, 64, 96, 65, 2),
    ("tiny", 5, 48, 64, 0, 1),
    ("medium", 1, 32, 48, 3, 2),
])
def test_flop_count_equals_torch_flop_counter(config, frames, height, width, num_anchor, batch):
    """Every matmul, convolution and attention of the plain forward, counted by torch, equals
    the analytic count (linear layers, 4*L^2*d self-attention, cross-attention over all 512
    context rows, embeddings and heads): the count is exact, not an estimate."""
    cfg = DiTConfig.preset(config)
    dit = build_dit(cfg, seed=0)
    shape = latent_shape(frames, height, width)
    src, noise, sem, ctx, neg = random_dit_inputs(cfg, shape, num_anchor=max(num_anchor, 1))
    sem = sem[:, :num_anchor]
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        dit(torch.cat([noise] * batch), torch.tensor([500.0]), torch.cat([ctx, neg][:batch]),
            torch.cat([src] * batch), torch.cat([sem] * batch))
    assert counter.get_total_flops() == dit_forward_flops(cfg, token_grid(cfg, shape), num_anchor, 512, batch)


def test_flop_count_at_the_real_shape():
    # 14B, 49 frames at 480p: ~2.3 PFLOP per pass as the latency issue states; the
    # self-attention scores and weighted sums are 58 % of it (the rest is linear layers).
    cfg = DiTConfig.preset("sama-14b")
    grid = token_grid(cfg, latent_shape(49, 480, 832))
    per_pass = dit_forward_flops(cfg, grid, 65, 512, batch=1)
    assert 2.2e15 < per_pass < 2.4e15
    length = 2 * grid[0] * grid[1] * grid[2] + 65
    attention = cfg.num_layers * 4 * length**2 * cfg.dim
    assert 0.55 < attention / per_pass < 0.6
    assert dit_forward_flops(cfg, grid, 65, 512, batch=2) == 2 * per_pass


def test_peak_table_for_mfu():
    assert bf16_peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert bf16_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert bf16_peak_tflops("NVIDIA H200") == 989.4
    assert bf16_peak_tflops("cpu (x86_64, 2 threads)") is None


def test_onnxruntime_backend_times_the_exported_graph(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("SAMA_RT_CACHE", str(tmp_path))
    bc = BenchConfig(config="tiny", frames=5, height=48, width=64, steps=2, backend="onnxruntime",
                     compare_reference=True)
    r = run_bench(bc)
    assert r["bench"]["backend"] == "onnxruntime" and r["per_step_s"] > 0
    # The float32 graph against the official step on the same weights: float32 rounding
    # of a different operation order (the torch fast path is held to the same bound).
    assert r["max_abs_diff"] < 1e-4 * max(1.0, r["reference_max_abs"])
    assert any(tmp_path.rglob("dit.onnx"))  # exported once into the cache


def test_stages_time_one_whole_edit():
    r = run_bench(BenchConfig(config="tiny", frames=5, height=64, width=96, steps=1, warmup=0, stages=True))
    stages = r["stages"]
    for stage in ("text", "vae_encode", "denoise", "vae_decode"):
        assert stages[stage] > 0
    assert stages["edited_resolution"] == "64x96"  # the bench's resolution is the edited bucket


def test_profile_splits_a_step_by_kind_of_work():
    r = run_bench(BenchConfig(config="tiny", frames=5, height=64, width=96, steps=1, warmup=1, profile=True))
    prof = r["profile"]
    assert prof["clock"] == "cpu operators"
    assert prof["categories_ms"]["gemm"] > 0 and prof["categories_ms"]["attention"] > 0
    assert sum(prof["categories_ms"].values()) == pytest.approx(prof["total_ms"])
    tops = [t["ms"] for t in prof["top"]]
    assert tops == sorted(tops, reverse=True)


@pytest.mark.parametrize("name,category", [
    ("anchor_attention_fwd", "attention"),
    ("rotated_copies_fwd", "attention"), ("fp8_copies_fwd", "attention"), ("rotate_keys_fwd", "attention"),
    ("quantize_rotated_fwd", "attention"), ("quantize_values_fwd", "attention"),
    ("pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128, 64, 4>>", "attention"),
    ("fmha_cutlassF_bf16_aligned_64x128_rf_sm80", "attention"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x256x64_warpgroupsize2x1x1", "gemm"),
    ("nvjet_hsh_256x128_64x4_2x1_v_bz_coopA_NTN", "gemm"),
    ("void cutlass::device_kernel<cutlass::gemm::kernel::GemmUniversal<...>>", "gemm"),
    ("void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<float, float>", "norm"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>>", "elementwise"),
    ("triton_poi_fused_add_mul_0", "elementwise"),
    ("Memcpy HtoD (Pinned -> Device)", "other"),
])
def test_profile_categories_of_typical_kernel_names(name, category):
    from sama_rt.bench import _category

    assert _category(name) == category


@pytest.mark.parametrize("kwargs,message", [
    ({"backend": "onnxruntime", "stages": True}, "torch backend in one process"),
    ({"backend": "onnxruntime", "dtype": "bfloat16"}, "float32 graph on CPU"),
    ({"backend": "onnxruntime", "cache_threshold": 0.1}, "without runtime options"),
    ({"backend": "tensorrt"}, "TensorRT"),
    ({"backend": "openvino"}, "unknown backend"),
    ({"device": "cuda", "ulysses": 2, "runtime": RuntimeOptions(cuda_graphs=True)}, "parallel steps"),
])
def test_bench_refuses_what_it_cannot_time(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BenchConfig(config="tiny", **kwargs)


def test_bench_names_the_attention_kernel_config_it_ran():
    """With a Triton attention backend the result says which kernel config the autotuner ran
    (here the interpreter's single one); with SDPA there is no kernel config to name."""
    r = run_bench(BenchConfig(config="tiny", frames=5, height=48, width=64, steps=1, warmup=0, attention="triton"))
    assert r["attention_backend"] == "triton" and r["attention_kernel_config"] == "16x16 w4 s1 split"
    r = run_bench(BenchConfig(config="tiny", frames=5, height=48, width=64, steps=1, warmup=0, attention="sdpa"))
    assert "attention_kernel_config" not in r
