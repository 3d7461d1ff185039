"""Ahead-of-time compilation of the anchor-attention kernel to PTX (and a cubin) on any machine.

A TensorRT plugin (QDP `aot_impl`) or any other C++ launcher needs, per specialisation, the
kernel name, its PTX, the launch configuration and the ordered parameter list. Compiling needs
no GPU: Triton lowers to PTX and runs its bundled ptxas for a cubin.

Launch contract of the compiled kernel (`CompiledAnchorAttention.params` lists it exactly):

* parameters, in order: pointers Q, K, V, COS, SIN (inputs), and for precision "fp8" also
  K_SCALE, V_SCALE (float32 scales that `anchor_attention.fp8_scales` computes), and with
  rotated_keys also KR (the rotated key copy that `anchor_attention.rotate_keys` writes:
  [B * heads, 2N, D] in `dtype`, which the launcher must produce first); int32 strides (in elements) of
  q, k, v, out for the batch, sequence and head dimensions (12 values); int32 num_heads,
  num_video (N), num_anchor (A); pointer OUT (output); then, on Triton versions that add
  them (3.3+), scratch pointers the kernel never uses: pass null (`compile_anchor_attention`
  refuses kernels that would need scratch memory; only `KernelSpec.tma_keys` kernels, for
  inspection, compile with it, marked `needs_scratch`).
  For contiguous [B, L, heads, D] tensors the strides are (L*heads*D, heads*D, D).
* q, k, v, out: [B, L = 2N + A, heads, D] in `dtype`, last dimension contiguous; cos, sin:
  [N, D/2] float32 contiguous; all pointers 16-byte aligned and all strides multiples of 16
  (true for contiguous tensors with D in {48, 96, 128}); the compiled code assumes both.
* grid: (ceil(2N / block_m) + (1 if A > 0 else 0), B * heads, 1); block: num_warps * 32
  threads; dynamic shared memory: `shared_mem` bytes (above 48 KB the launcher must raise the
  function's max dynamic shared memory attribute first).
* the softmax scale is baked in (a constexpr): TensorRT plugins take float scalars only as
  compile-time constants.

Command line (writes <out>/<name>.ptx, .cubin, .json):
    python -m sama_rt.kernels.aot --head-dim 128 --dtype bf16 --arch 90 --out build/kernels
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import logging
import math
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from .anchor_attention import _INTERPRETED, AttentionPrecision, anchor_attention_fwd, dot_precision, padded_dims

logger = logging.getLogger(__name__)

_LOG2E = 1.4426950408889634
_TRITON_DTYPES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
_DTYPES_BY_NAME = {name: dtype for dtype, name in _TRITON_DTYPES.items()}
# Triton only generates float8 tensor-core code from Ada (sm_89) on.
MIN_FP8_ARCH = 89


@dataclass(frozen=True)
class KernelParam:
    """One parameter of the compiled kernel, in launch order."""

    name: str
    type: str  # Triton type: "*fp16" (pointer), "i32", ...


@dataclass(frozen=True)
class CompiledAnchorAttention:
    """One specialisation of the kernel, ready for a launcher that has no Python."""

    kernel_name: str
    ptx: str
    cubin: bytes | None
    shared_mem: int
    num_warps: int
    num_stages: int
    block_m: int
    block_n: int
    arch: int
    head_dim: int
    dtype: str
    precision: str
    scale: float
    params: tuple[KernelParam, ...]
    # The kernel reads a global scratch buffer (tensor descriptors, KernelSpec.tma_keys): its
    # scratch parameter must point at real memory, unlike the launch contract above says.
    needs_scratch: bool = False
    grid: str = "(ceil(2 * num_video / block_m) + (1 if num_anchor > 0 else 0), batch * num_heads, 1)"

    @property
    def threads_per_block(self) -> int:
        return self.num_warps * 32

    def grid_size(self, batch: int, num_heads: int, num_video: int, num_anchor: int) -> tuple[int, int, int]:
        x = math.ceil(2 * num_video / self.block_m) + (1 if num_anchor > 0 else 0)
        return x, batch * num_heads, 1

    def save(self, directory: str | Path, stem: str | None = None) -> Path:
        """Write <stem>.ptx, <stem>.cubin (when present) and <stem>.json; returns the json path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        stem = stem or f"{self.kernel_name}_d{self.head_dim}_{self.dtype}_{self.precision}_sm{self.arch}"
        (directory / f"{stem}.ptx").write_text(self.ptx)
        if self.cubin is not None:
            (directory / f"{stem}.cubin").write_bytes(self.cubin)
        info = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("ptx", "cubin")}
        info["params"] = [dataclasses.asdict(p) for p in self.params]
        info["threads_per_block"] = self.threads_per_block
        path = directory / f"{stem}.json"
        path.write_text(json.dumps(info, indent=2))
        return path

    @classmethod
    def load(cls, json_path: str | Path) -> "CompiledAnchorAttention":
        json_path = Path(json_path)
        info = json.loads(json_path.read_text())
        info.pop("threads_per_block", None)
        info["params"] = tuple(KernelParam(**p) for p in info["params"])
        cubin_path = json_path.with_suffix(".cubin")
        return cls(
            ptx=json_path.with_suffix(".ptx").read_text(),
            cubin=cubin_path.read_bytes() if cubin_path.exists() else None,
            **info,
        )


def _uses_modern_ast_source() -> bool:
    # Triton >= 3.2: signature {arg name: type, "constexpr" for constants}, constants passed
    # as `constexprs` keyed by name. Older releases keyed both by argument index.
    return "constexprs" in inspect.signature(ASTSource.__init__).parameters


def _ptx_entry_params(ptx: str, kernel_name: str) -> list[str]:
    """PTX types of the entry's parameters, in order (e.g. ['u64', 'u64', 'u32', ...])."""
    match = re.search(r"\.entry\s+" + re.escape(kernel_name) + r"\s*\(([^)]*)\)", ptx)
    if match is None:
        raise RuntimeError(f"entry {kernel_name} not found in the PTX")
    return re.findall(r"\.param\s+\.(\w+)", match.group(1))


@dataclass(frozen=True)
class KernelSpec:
    """Everything that selects one compiled specialisation.

    block_n counts positions (each loop step covers block_n source + block_n target keys).
    Defaults are the first Hopper autotune config. `ptx_version` (e.g. 80 for PTX 8.0) lowers
    the PTX ISA version for drivers that must JIT the PTX; by default Triton picks the newest
    its ptxas knows.
    """

    head_dim: int
    dtype: str = "bf16"  # "fp16" | "bf16" | "fp32"
    block_m: int = 128
    block_n: int = 32
    num_warps: int = 8
    num_stages: int = 3
    arch: int = 90  # CUDA compute capability: 90 = H100/H200, 89 = L40S/RTX 4090, 80 = A100
    precision: str = AttentionPrecision.NATIVE.value
    scale: float | None = None  # softmax scale; None = head_dim ** -0.5
    ptx_version: int | None = None
    split_loads: bool = True  # q/k rows read whole and split into channel pairs in registers
    rotated_keys: bool = False  # KeyRotation.ONCE: keys read from the KR copy (native precision only)
    flat_keys: bool = False  # with rotated_keys: block_n rows of the copy a step, one full-width dot
    # with flat_keys: tiles loaded through device-side tensor descriptors (TMA). Such a kernel
    # needs a global scratch buffer per launch that this launch contract does not provide:
    # for inspecting the compiled code (benchmarks/kernel_sass.py), not for AOT launchers.
    tma_keys: bool = False

    def __post_init__(self):
        precision = AttentionPrecision.parse(self.precision)
        if self.dtype not in _DTYPES_BY_NAME:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES_BY_NAME)}, got {self.dtype!r}")
        if precision is AttentionPrecision.FP8:
            if self.rotated_keys:
                raise ValueError("rotated_keys is a native-precision variant")
            if self.arch < MIN_FP8_ARCH:
                raise ValueError(f"fp8 attention needs sm_{MIN_FP8_ARCH} or newer, got sm_{self.arch}")
            if self.block_n < 32:
                raise ValueError("fp8 dots reduce over block_n, which must be >= 32")
        if self.flat_keys and not self.rotated_keys:
            raise ValueError("flat_keys reads the rotated key copy: set rotated_keys too")
        if self.tma_keys and not self.flat_keys:
            raise ValueError("tma_keys is a form of the flat loop: set flat_keys too")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even, got {self.head_dim}")
        for name in ("block_m", "block_n"):
            value = getattr(self, name)
            if value < 16 or value & (value - 1):
                raise ValueError(f"{name} must be a power of two >= 16, got {value}")

    @property
    def softmax_scale(self) -> float:
        return float(self.head_dim) ** -0.5 if self.scale is None else float(self.scale)


def compile_anchor_attention(
    head_dim: int,
    dtype: torch.dtype,
    block_m: int = 128,
    block_n: int = 32,
    num_warps: int = 8,
    num_stages: int = 3,
    arch: int = 90,
    precision: AttentionPrecision | str = AttentionPrecision.NATIVE,
    scale: float | None = None,
    ptx_version: int | None = None,
    split_loads: bool = True,
) -> CompiledAnchorAttention:
    """Compile one specialisation (see `KernelSpec` for the arguments)."""
    if dtype not in _TRITON_DTYPES:
        raise ValueError(f"dtype must be one of {list(_TRITON_DTYPES)}, got {dtype}")
    spec = KernelSpec(
        head_dim=head_dim, dtype=_TRITON_DTYPES[dtype], block_m=block_m, block_n=block_n, num_warps=num_warps,
        num_stages=num_stages, arch=arch, precision=AttentionPrecision.parse(precision).value, scale=scale,
        ptx_version=ptx_version, split_loads=split_loads,
    )
    return compile_kernel_specs([spec])[0]


def compile_kernel_specs(specs: list[KernelSpec]) -> list[CompiledAnchorAttention]:
    """Compile several specialisations (in one helper process under TRITON_INTERPRET=1)."""
    if not _uses_modern_ast_source():
        raise RuntimeError(f"ahead-of-time compilation needs Triton >= 3.2 (found {triton.__version__})")
    if _INTERPRETED:
        # Under TRITON_INTERPRET=1 every triton.jit function, triton.language's own (tl.sum,
        # tl.max, ...) included, was built for the interpreter at import and cannot be
        # compiled. A fresh interpreter without the variable compiles normally.
        return _compile_in_subprocess(specs)
    return [_compile(spec) for spec in specs]


def _compile(spec: KernelSpec) -> CompiledAnchorAttention:
    head_dim, dtype, block_m, block_n = spec.head_dim, spec.dtype, spec.block_m, spec.block_n
    num_warps, num_stages, arch, precision = spec.num_warps, spec.num_stages, spec.arch, spec.precision
    scale = spec.softmax_scale
    fp8 = precision == AttentionPrecision.FP8.value
    half_pad, dim_pad = padded_dims(head_dim, fp8)
    kernel = anchor_attention_fwd
    constexprs = {
        "QK_SCALE": scale * _LOG2E,
        "HEAD_DIM": head_dim,
        "HALF_PAD": half_pad,
        "DIM_PAD": dim_pad,
        "FP8": fp8,
        "DOT_PRECISION": dot_precision(_DTYPES_BY_NAME[dtype]),
        "ROUND_IN_FP32": False,
        "BLOCK_M": block_m,
        "BLOCK_N": block_n,
        "SPLIT_LOADS": spec.split_loads,
        "ROTATED_KEYS": spec.rotated_keys,
        "FLAT_KEYS": spec.flat_keys,
        "TMA_KEYS": spec.tma_keys,
    }
    pointer_types = {"Q": f"*{dtype}", "K": f"*{dtype}", "V": f"*{dtype}", "OUT": f"*{dtype}", "COS": "*fp32", "SIN": "*fp32"}
    if fp8:  # the scales of `fp8_scales`; native precision compiles them out (None)
        pointer_types.update(K_SCALE="*fp32", V_SCALE="*fp32")
    else:
        constexprs.update(K_SCALE=None, V_SCALE=None)
    if spec.rotated_keys:  # the copy of `rotate_keys`; keys rotated in the loop compile it out
        pointer_types.update(KR=f"*{dtype}")
    else:
        constexprs.update(KR=None)
    signature = {
        name: "constexpr" if name in constexprs else pointer_types.get(name, "i32") for name in kernel.arg_names
    }
    runtime_args = [name for name in kernel.arg_names if name not in constexprs]
    # Alignment hints: 16-byte aligned pointers and strides that are multiples of 16 let the
    # compiler vectorise the loads. num_heads / num_video / num_anchor get no hint.
    hinted = [i for i, name in enumerate(kernel.arg_names) if name in pointer_types or name.startswith("stride_")]
    attrs = {(i,): [["tt.divisibility", 16]] for i in hinted}
    if hasattr(triton.backends.compiler, "AttrsDescriptor"):
        attrs = None  # Triton 3.2 took hints in another format; compile without them there

    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    options = {"num_warps": num_warps, "num_stages": num_stages}
    if spec.ptx_version is not None:
        options["ptx_version"] = spec.ptx_version
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)

    metadata = compiled.metadata
    for field in ("global_scratch_size", "profile_scratch_size"):
        if getattr(metadata, field, 0) and not (spec.tma_keys and field == "global_scratch_size"):
            raise RuntimeError(f"compiled kernel needs {field}={getattr(metadata, field)}; an AOT launcher cannot provide it")
    ptx = compiled.asm["ptx"]
    entry_types = _ptx_entry_params(ptx, metadata.name)
    if len(entry_types) < len(runtime_args):
        raise RuntimeError(f"PTX entry has {len(entry_types)} parameters, expected at least {len(runtime_args)}")
    params = [KernelParam(name, signature[name]) for name in runtime_args]
    params += [KernelParam(f"scratch_{i}", "*i8") for i in range(len(entry_types) - len(runtime_args))]
    cubin = compiled.asm.get("cubin")
    logger.info(
        "compiled %s for sm_%d: %s, D=%d, %s, %dx%d tiles, %d warps, %d stages, %d B shared",
        metadata.name, arch, dtype, head_dim, precision, block_m, block_n, num_warps, num_stages, metadata.shared,
    )
    return CompiledAnchorAttention(
        kernel_name=metadata.name,
        ptx=ptx,
        cubin=bytes(cubin) if cubin is not None else None,
        shared_mem=int(metadata.shared),
        num_warps=num_warps,
        num_stages=num_stages,
        block_m=block_m,
        block_n=block_n,
        arch=arch,
        head_dim=head_dim,
        dtype=dtype,
        precision=precision,
        scale=scale,
        params=tuple(params),
        needs_scratch=bool(getattr(metadata, "global_scratch_size", 0)),
    )


def _compile_in_subprocess(specs: list[KernelSpec]) -> list[CompiledAnchorAttention]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    payload = json.dumps([dataclasses.asdict(spec) for spec in specs])
    with tempfile.TemporaryDirectory() as out_dir:
        cmd = [sys.executable, "-m", __name__, "--specs", payload, "--out", out_dir]
        result = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"ahead-of-time compilation failed:\n{result.stderr[-4000:]}")
        return [CompiledAnchorAttention.load(Path(out_dir) / f"kernel_{i}.json") for i in range(len(specs))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Compile the anchor-attention kernel to PTX + cubin.")
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--dtype", choices=sorted(_DTYPES_BY_NAME), default="bf16")
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 (H100), 89 (L40S)")
    parser.add_argument("--precision", choices=[p.value for p in AttentionPrecision], default="native")
    parser.add_argument("--block-m", type=int, default=128)
    parser.add_argument("--block-n", type=int, default=32)
    parser.add_argument("--num-warps", type=int, default=8)
    parser.add_argument("--num-stages", type=int, default=3)
    parser.add_argument("--scale", type=float, default=None, help="softmax scale (default head_dim ** -0.5)")
    parser.add_argument("--ptx-version", type=int, default=None)
    parser.add_argument("--strided-loads", action="store_true",
                        help="read q/k channel pairs with strided loads (the Ampere/Ada configs' choice)")
    parser.add_argument("--specs", default=None, help=argparse.SUPPRESS)  # json list of KernelSpec fields
    parser.add_argument("--out", required=True, help="output directory")
    args = parser.parse_args(argv)
    if args.specs is not None:
        # Batch mode used by compile_kernel_specs: files are named kernel_<i>.*
        specs = [KernelSpec(**fields) for fields in json.loads(args.specs)]
        for i, compiled in enumerate(compile_kernel_specs(specs)):
            compiled.save(args.out, f"kernel_{i}")
        return
    spec = KernelSpec(
        head_dim=args.head_dim, dtype=args.dtype, block_m=args.block_m, block_n=args.block_n,
        num_warps=args.num_warps, num_stages=args.num_stages, arch=args.arch, precision=args.precision,
        scale=args.scale, ptx_version=args.ptx_version, split_loads=not args.strided_loads,
    )
    (compiled,) = compile_kernel_specs([spec])
    path = compiled.save(args.out)
    print(json.dumps({"json": str(path), "kernel_name": compiled.kernel_name, "shared_mem": compiled.shared_mem}))


if __name__ == "__main__":
    main()
