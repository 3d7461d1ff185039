"""Ahead-of-time compilation of the anchor-attention kernel (no GPU needed)."""
from __future__ import annotations

import importlib
import re

import pytest
import torch

from sama_rt.kernels.aot import CompiledAnchorAttention, KernelSpec, compile_anchor_attention, compile_kernel_specs

# The launch order documented in sama_rt.kernels.aot (inputs, int32 scalars, output).
DOCUMENTED_PARAMS = [
    ("Q", "*{t}"), ("K", "*{t}"), ("V", "*{t}"), ("COS", "*fp32"), ("SIN", "*fp32"),
    ("stride_qb", "i32"), ("stride_ql", "i32"), ("stride_qh", "i32"),
    ("stride_kb", "i32"), ("stride_kl", "i32"), ("stride_kh", "i32"),
    ("stride_vb", "i32"), ("stride_vl", "i32"), ("stride_vh", "i32"),
    ("stride_ob", "i32"), ("stride_ol", "i32"), ("stride_oh", "i32"),
    ("num_heads", "i32"), ("num_video", "i32"), ("num_anchor", "i32"),
    ("OUT", "*{t}"),
]


FP8_SCALE_PARAMS = [("K_SCALE", "*fp32"), ("V_SCALE", "*fp32")]  # after SIN, fp8 only


def _check_params(compiled: CompiledAnchorAttention, elem: str) -> None:
    documented = DOCUMENTED_PARAMS
    if compiled.precision == "fp8":
        documented = documented[:5] + FP8_SCALE_PARAMS + documented[5:]
    expected = [(name, ty.format(t=elem)) for name, ty in documented]
    got = [(p.name, p.type) for p in compiled.params]
    assert got[: len(expected)] == expected
    # Anything after OUT is a scratch pointer Triton appends; the PTX entry has exactly as many
    # parameters as the list, pointers as u64 and int scalars as u32.
    assert all(p.name.startswith("scratch_") for p in compiled.params[len(expected):])
    entry = re.search(r"\.entry\s+" + compiled.kernel_name + r"\s*\(([^)]*)\)", compiled.ptx).group(1)
    ptx_types = re.findall(r"\.param\s+\.(\w+)", entry)
    assert len(ptx_types) == len(compiled.params)
    for param, ptx_type in zip(compiled.params, ptx_types):
        assert ptx_type == ("u64" if param.type.startswith("*") else "u32"), (param, ptx_type)


SPECS = {
    # The first Hopper and Ampere/Ada autotune configs, and fp8 on both fp8-capable archs.
    "hopper": KernelSpec(128, "fp16", block_m=128, block_n=32, num_warps=8, num_stages=3, arch=90),
    "hopper_strided": KernelSpec(128, "fp16", block_m=128, block_n=32, num_warps=8, num_stages=3, arch=90,
                                 split_loads=False),
    "ada": KernelSpec(48, "bf16", block_m=128, block_n=16, num_warps=8, num_stages=2, arch=89, split_loads=False),
    "hopper_fp8": KernelSpec(128, "bf16", block_m=128, block_n=32, num_warps=8, num_stages=2, arch=90, precision="fp8"),
    "ada_fp8": KernelSpec(128, "bf16", block_m=128, block_n=32, num_warps=8, num_stages=2, arch=89, precision="fp8"),
    # Keys rotated once: the first config of its Hopper list.
    "hopper_keys_once": KernelSpec(128, "bf16", block_m=128, block_n=64, num_warps=8, num_stages=2, arch=90,
                                   rotated_keys=True),
    # ... and its flat loop (the copy's rows as one key sequence).
    "hopper_flat_keys": KernelSpec(128, "bf16", block_m=128, block_n=64, num_warps=8, num_stages=3, arch=90,
                                   rotated_keys=True, flat_keys=True),
    # ... with its tiles loaded by TMA (inspection only: it needs a scratch buffer).
    "hopper_tma_keys": KernelSpec(128, "bf16", block_m=128, block_n=64, num_warps=8, num_stages=3, arch=90,
                                  rotated_keys=True, flat_keys=True, tma_keys=True),
}


@pytest.fixture(scope="module")
def compiled() -> dict[str, CompiledAnchorAttention]:
    # One batch: under the interpreter all compiles share a single helper process.
    return dict(zip(SPECS, compile_kernel_specs(list(SPECS.values()))))


def test_compiles_for_hopper_with_wgmma(compiled):
    kernel = compiled["hopper"]
    assert ".target sm_90a" in kernel.ptx
    assert "wgmma.mma_async" in kernel.ptx  # Hopper tensor cores, not a scalar fallback
    assert kernel.cubin and len(kernel.cubin) > 1000
    assert 0 < kernel.shared_mem <= 232448  # fits an H100's 227 KB per block
    assert kernel.threads_per_block == 256
    assert kernel.scale == pytest.approx(128**-0.5)
    _check_params(kernel, "fp16")


def test_split_loads_read_whole_rows_asynchronously(compiled):
    """Why Hopper's configs split q/k rows in registers: every global read becomes a 16-byte
    asynchronous copy that the software pipeline overlaps with the dots, where the strided
    variant reads each channel with its own 2-byte load."""
    split, strided = compiled["hopper"].ptx, compiled["hopper_strided"].ptx
    assert "ld.global.b16" not in split and "cp.async" in split
    assert len(re.findall(r"ld\.global\.b16", strided)) >= 64


def test_compiles_for_ada_with_mma_sync(compiled):
    kernel = compiled["ada"]
    assert ".target sm_89" in kernel.ptx
    assert "mma.sync" in kernel.ptx
    assert kernel.cubin
    assert 0 < kernel.shared_mem <= 101376  # fits an L40S / RTX 4090 block
    _check_params(kernel, "bf16")


@pytest.mark.parametrize("name", ["hopper_fp8", "ada_fp8"])
def test_fp8_compiles_from_ada_on(compiled, name):
    kernel = compiled[name]
    assert kernel.precision == "fp8"
    assert "e4m3" in kernel.ptx  # float8 conversions / dots really are in the code
    _check_params(kernel, "bf16")


def test_keys_rotated_once_take_the_copy_after_the_inputs(compiled):
    kernel = compiled["hopper_keys_once"]
    got = [(p.name, p.type) for p in kernel.params]
    documented = [(name, ty.format(t="bf16")) for name, ty in DOCUMENTED_PARAMS]
    assert got[: len(documented) + 1] == documented[:5] + [("KR", "*bf16")] + documented[5:]
    assert "wgmma.mma_async" in kernel.ptx
    assert 0 < kernel.shared_mem <= 232448
    with pytest.raises(ValueError, match="native-precision"):
        KernelSpec(128, "bf16", precision="fp8", rotated_keys=True)


def test_flat_key_loop_keeps_the_launch_contract(compiled):
    """The flat loop changes the kernel's inside only: same parameters and grid as keys once."""
    flat, once = compiled["hopper_flat_keys"], compiled["hopper_keys_once"]
    assert flat.params == once.params
    assert flat.grid_size(2, 40, 20280, 65) == once.grid_size(2, 40, 20280, 65)
    assert "wgmma.mma_async" in flat.ptx and flat.ptx != once.ptx
    assert 0 < flat.shared_mem <= 232448
    with pytest.raises(ValueError, match="set rotated_keys too"):
        KernelSpec(128, "bf16", flat_keys=True)


def test_tma_key_loop_loads_by_tensor_descriptor_and_says_it_needs_scratch(compiled):
    tma, flat = compiled["hopper_tma_keys"], compiled["hopper_flat_keys"]
    assert "cp.async.bulk.tensor" in tma.ptx and "cp.async.bulk.tensor" not in flat.ptx
    assert tma.needs_scratch and not flat.needs_scratch
    with pytest.raises(ValueError, match="set flat_keys too"):
        KernelSpec(128, "bf16", rotated_keys=True, tma_keys=True)


def test_save_and_load_round_trip(compiled, tmp_path):
    kernel = compiled["ada"]
    loaded = CompiledAnchorAttention.load(kernel.save(tmp_path))
    assert loaded == kernel


def test_fp8_refused_before_ada():
    with pytest.raises(ValueError, match="sm_89"):
        compile_anchor_attention(128, torch.float16, arch=80, precision="fp8")


def test_rejects_bad_tiles_and_dtypes():
    with pytest.raises(ValueError, match="power of two"):
        compile_anchor_attention(128, torch.float16, block_m=96)
    with pytest.raises(ValueError, match="dtype"):
        compile_anchor_attention(128, torch.int8)
    with pytest.raises(ValueError, match="block_n"):
        KernelSpec(128, precision="fp8", block_n=16)


def test_grid_rule():
    compiled = CompiledAnchorAttention(
        kernel_name="k", ptx="", cubin=None, shared_mem=0, num_warps=8, num_stages=3, block_m=128, block_n=32,
        arch=90, head_dim=128, dtype="bf16", precision="native", scale=128**-0.5, params=(),
    )
    # 81 frames at 480x832: N = 21 * 30 * 52 = 32760, 65 anchors, B = 2, 40 heads.
    assert compiled.grid_size(2, 40, 32760, 65) == (512 + 1, 80, 1)
    assert compiled.grid_size(1, 2, 15, 0) == (1, 2, 1)


def _first_config_spec(configs, head_dim: int, dtype: str, arch: int) -> KernelSpec:
    c = configs[0]
    return KernelSpec(head_dim, dtype, c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages,
                      arch=arch, split_loads=c.kwargs["SPLIT_LOADS"])


def test_first_config_of_every_list_fits_its_gpus_shared_memory():
    """SAMA_RT_AUTOTUNE=0 launches the first config of a list untried, so it must fit the
    smallest GPU the list serves, at the largest head_dim: Hopper 227 KiB per block, Ada
    (and consumer Ampere) 99 KiB. Float32 inputs have their own list, for every GPU."""
    kernel_module = importlib.import_module("sama_rt.kernels.anchor_attention")  # the module, not the function
    hopper_limit, ada_limit = 232448, 101376
    cases = [
        (_first_config_spec(kernel_module.HOPPER_CONFIGS, 128, "bf16", 90), hopper_limit),
        (_first_config_spec(kernel_module.AMPERE_CONFIGS, 128, "bf16", 89), ada_limit),
        (_first_config_spec(kernel_module.FLOAT32_CONFIGS, 128, "fp32", 90), ada_limit),
        (_first_config_spec(kernel_module.FLOAT32_CONFIGS, 128, "fp32", 89), ada_limit),
    ]
    for (spec, limit), kernel in zip(cases, compile_kernel_specs([spec for spec, _ in cases])):
        assert 0 < kernel.shared_mem <= limit, (spec, kernel.shared_mem)
