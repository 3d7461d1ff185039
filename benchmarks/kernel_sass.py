"""What the anchor-attention kernel compiles to, per autotune config: no GPU needed.

    python benchmarks/kernel_sass.py [--head-dim 128] [--dtype bf16] [--json]

Every config of the autotune lists (and its split/strided twin) is compiled ahead of time
for its architecture (sm_90 for the Hopper lists, keys rotated in the loop or once, sm_89
for the Ampere/Ada list), and the
cubin is read with the cuobjdump that ships with Triton: registers per thread, static
counts of local-memory instructions (register spills), shared memory, synchronous global
loads (LDG: the loop waits for them), asynchronous copies (LDGSTS: the software pipeline
overlaps them with the dots) and tensor-memory-accelerator loads (TMA: UTMALDG),
shared-memory stores (STS: data staged through registers, such
as the rotated k tile, on its way to the dots), and which tensor-core instructions the dots
became. These are the facts the config lists were chosen from; speed
itself needs a GPU (benchmarks/attention.py). For the main loop of each (the largest span
closed by a backward branch), the instructions per thread and iteration, and those on its
common path (without the lazy rescale), with the softmax's kinds of instructions counted. Then the rotated-copies kernel's configs
(kernels/rotated_copies.py), as they run and warp-specialised (wrong on the H100 with Triton
3.6, see there): the warps each was compiled with and the warps Triton made of them, and the
register budgets (setmaxnreg) the warp-specialised warpgroups trade. Then the FP8 loop over
e4m3 copies (kernels/fp8_copies.py), and last the Gluon kernel's configs, native and FP8
(kernels/gluon_attention.py), and its warp-specialised form's (kernels/gluon_ws_attention.py:
the loop counts of its first consumer partition).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import triton

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sama_rt.kernels.aot import KernelSpec, compile_kernel_specs  # noqa: E402
from sama_rt.kernels.fp8_copies import compile_fp8_copies  # noqa: E402
from sama_rt.kernels.gluon_attention import (  # noqa: E402
    GLUON_CONFIGS,
    GLUON_FP8_CONFIGS,
    compile_gluon_attention,
    parse_gluon_config,
)
from sama_rt.kernels.gluon_ws_attention import (  # noqa: E402
    GLUON_WS_CONFIGS,
    GLUON_WS_FP8_CONFIGS,
    compile_gluon_ws_attention,
    parse_gluon_ws_config,
)
from sama_rt.kernels.rotated_copies import compile_rotated_copies  # noqa: E402

kernel = importlib.import_module("sama_rt.kernels.anchor_attention")  # the module, not the function

CUOBJDUMP = Path(os.path.dirname(triton.__file__)) / "backends" / "nvidia" / "bin" / "cuobjdump"


def specs(head_dim: int, dtype: str) -> list[KernelSpec]:
    out = {}
    for arch, configs in ((90, kernel.HOPPER_CONFIGS), (89, kernel.AMPERE_CONFIGS)):
        for c in configs:
            m, n = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]
            for split in (c.kwargs["SPLIT_LOADS"], not c.kwargs["SPLIT_LOADS"]):
                for precision in ("native", "fp8") if n >= 32 else ("native",):
                    spec = KernelSpec(head_dim, dtype, m, n, c.num_warps, c.num_stages, arch=arch,
                                      precision=precision, split_loads=split)
                    out.setdefault(spec, None)  # a config and its twin may both be listed
    # Keys rotated once (native only; the Hopper list for it, whose 128x32 is also the in-loop
    # list's first tile: a like-for-like comparison).
    for c in kernel.ROTATED_KEYS_HOPPER_CONFIGS:
        spec = KernelSpec(head_dim, dtype, c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages,
                          arch=90, split_loads=c.kwargs["SPLIT_LOADS"], rotated_keys=True,
                          flat_keys=c.kwargs["FLAT_KEYS"], tma_keys=c.kwargs["TMA_KEYS"])
        out.setdefault(spec, None)
    return list(out)


def listed(spec: KernelSpec) -> bool:
    if spec.rotated_keys:
        configs = kernel.ROTATED_KEYS_HOPPER_CONFIGS
    else:
        configs = kernel.HOPPER_CONFIGS if spec.arch >= 90 else kernel.AMPERE_CONFIGS
    return any((c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages, c.kwargs["SPLIT_LOADS"],
                c.kwargs["FLAT_KEYS"], c.kwargs["TMA_KEYS"])
               == (spec.block_m, spec.block_n, spec.num_warps, spec.num_stages, spec.split_loads, spec.flat_keys,
                   spec.tma_keys)
               for c in configs)


def _keys_label(spec: KernelSpec) -> str:
    if not spec.rotated_keys:
        return "in-loop"
    return "once, flat, tma" if spec.tma_keys else "once, flat" if spec.flat_keys else "once"


def _cuobjdump(cubin: bytes, flag: str) -> str:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([str(CUOBJDUMP), flag, f.name], capture_output=True, text=True, check=True).stdout


def sass_text(cubin: bytes) -> str:
    """The cubin's SASS, as cuobjdump prints it."""
    return _cuobjdump(cubin, "-sass")


def sass_stats(cubin: bytes) -> dict:
    usage = _cuobjdump(cubin, "-res-usage")
    sass = sass_text(cubin)
    names = re.findall(r"/\*[0-9a-f]{4}\*/\s+([A-Z][A-Z0-9_.]*)", sass)
    ops = Counter(op.split(".")[0] for op in names)
    # Which tensor-core instructions the dots became: HGMMA / QGMMA are Hopper's warpgroup
    # MMAs (bf16-fp16 / fp8), HMMA / QMMA the per-warp ones of Ampere and Ada.
    mma = Counter(".".join(op.split(".")[:2]) for op in names if op.split(".")[0] in ("HGMMA", "QGMMA", "HMMA", "QMMA"))
    return {"registers": int(re.search(r"REG:(\d+)", usage).group(1)), "spill_instructions": ops["STL"] + ops["LDL"],
            # TMA loads are predicated (one elected thread issues them): counted on their own
            "ldg": ops["LDG"], "ldgsts": ops["LDGSTS"], "tma": len(re.findall(r"\bUTMALDG\b", sass)),
            "sts": ops["STS"],
            # register budgets that warp-specialised code hands between its warpgroups
            "setmaxnreg": sorted({int(n, 16) for n in re.findall(r"USETMAXREG\.\w+\.CTAPOOL (?:UP\d, )?(0x[0-9a-f]+)", sass)}),
            "instructions": sum(ops.values()),
            "tensor_core": ", ".join(f"{name} x{count}" for name, count in sorted(mma.items())),
            **main_loop_stats(sass)}


# Instruction kinds counted in a loop's common path: what the softmax and the rescale cost.
LOOP_KINDS = ("MUFU", "FFMA", "FMUL", "FADD", "FMNMX", "FSEL", "F2FP", "PRMT")


def main_loop_stats(sass: str) -> dict:
    """Static counts of the kernel's main loop, per thread and iteration: `loop_instructions`
    (the largest span closed by a backward branch) and `hot_path_instructions`,
    without the blocks of 50 or more instructions that a forward branch inside it may skip
    (the lazy rescale; on the path where it is skipped), with the `LOOP_KINDS` counted on that
    path. Zeros when the code has no such loop."""
    ops = [(int(address, 16), text.strip()) for address, text in re.findall(r"/\*([0-9a-f]{4})\*/\s+([^;]*);", sass)]
    # Barrier-wait stubs sit after the last EXIT and branch back into the code: not loops.
    end = max((address for address, text in ops if re.search(r"\bEXIT\b", text)), default=0)
    loop = None
    for address, text in ops:
        target = re.search(r"BRA 0x([0-9a-f]+)", text)
        if target and address < end and 16 * 16 < address - int(target[1], 16):
            span = (int(target[1], 16), address)
            if loop is None or span[1] - span[0] > loop[1] - loop[0]:
                loop = span
    if loop is None:
        return {"loop_instructions": 0, "hot_path_instructions": 0, "hot_path": {}}
    return _span_stats(ops, loop)


def _span_stats(ops: list[tuple[int, str]], loop: tuple[int, int]) -> dict:
    """main_loop_stats' counts for the loop spanning the addresses `loop` (first, last)."""
    body = [(address, text) for address, text in ops if loop[0] <= address <= loop[1]]
    skipped = set()
    for address, text in body:
        target = re.search(r"BRA 0x([0-9a-f]+)", text)
        if target and text.startswith("@") and address < int(target[1], 16) <= loop[1]:
            block = [a for a, _ in body if address < a < int(target[1], 16)]
            if len(block) >= 50:
                skipped.update(block)
    hot = Counter(re.sub(r"^@!?U?P\w+\s+", "", text).split()[0].split(".")[0]
                  for address, text in body if address not in skipped)
    return {"loop_instructions": len(body), "hot_path_instructions": sum(hot.values()),
            "hot_path": {kind: hot[kind] for kind in LOOP_KINDS + ("STL", "LDL", "BAR")}}


def mma_loops(sass: str) -> list[dict]:
    """`_span_stats` of every innermost loop with tensor-core instructions, in address order:
    a warp-specialised kernel's consumer loops (one a partition), wherever the compiler put
    them (its partitions sit in a dispatch loop, so they are not the largest span)."""
    ops = [(int(address, 16), text.strip()) for address, text in re.findall(r"/\*([0-9a-f]{4,5})\*/\s+([^;]*);", sass)]
    # Barrier-wait stubs sit after the last EXIT and branch back into the code: not loops.
    end = max((address for address, text in ops if re.search(r"\bEXIT\b", text)), default=0)
    spans = set()
    for address, text in ops:
        target = re.search(r"BRA (?:`\(.*?\) )?0x([0-9a-f]+)", text)
        if target and int(target[1], 16) < address < end:
            spans.add((int(target[1], 16), address))
    with_mma = [span for span in spans
                if any(span[0] <= a <= span[1] and re.search(r"\b[HQ]GMMA\b", t) for a, t in ops)]
    innermost = [span for span in with_mma
                 if not any(other != span and span[0] <= other[0] and other[1] <= span[1] for other in with_mma)]
    return [_span_stats(ops, span) for span in sorted(innermost)]


def _gluon_row(parsed, compiled, fp8: bool, warps, kernel_name: str) -> dict:
    """A table row for a Gluon kernel's config (`parsed`: its GluonConfig or GluonWsConfig)."""
    return {"arch": 90, "tile": f"{parsed.block_m}x{parsed.block_n}", "warps": warps, "stages": parsed.stages,
            "precision": "fp8" if fp8 else "native", "split_loads": True,
            "keys": "q, k, v " + ("quantized copies" if fp8 else "copied") + f", {kernel_name}"
            + (", lazy rescale" if parsed.lazy_rescale else ""),
            "in_autotune_list": False, "shared_kib": compiled.metadata.shared // 1024,
            **sass_stats(compiled.asm["cubin"])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp16"])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not CUOBJDUMP.is_file():
        print(f"cuobjdump not found at {CUOBJDUMP} (it ships with Triton's NVIDIA backend)", file=sys.stderr)
        return 2
    todo = specs(args.head_dim, args.dtype)
    rows = []
    for spec, compiled in zip(todo, compile_kernel_specs(todo)):
        rows.append({"arch": spec.arch, "tile": f"{spec.block_m}x{spec.block_n}", "warps": spec.num_warps,
                     "stages": spec.num_stages, "precision": spec.precision, "split_loads": spec.split_loads,
                     "keys": _keys_label(spec), "in_autotune_list": listed(spec),
                     "shared_kib": compiled.shared_mem // 1024, **sass_stats(compiled.cubin)})
    # kernels/rotated_copies.py: its configs compiled for sm_90, plain and warp-specialised.
    for c in kernel.ROTATED_COPIES_CONFIGS:
        m, n, warps, stages = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages
        for ws in (False, True):
            compiled = compile_rotated_copies(m, n, warps, stages, head_dim=args.head_dim, dtype=args.dtype,
                                              warp_specialize=ws)
            rows.append({"arch": 90, "tile": f"{m}x{n}", "warps": f"{warps} -> {compiled.metadata.num_warps}",
                         "stages": stages, "precision": "native", "split_loads": True,
                         "keys": "q, k, v copied" + (", warp-specialised" if ws else ""), "in_autotune_list": not ws,
                         "shared_kib": compiled.metadata.shared // 1024, **sass_stats(compiled.asm["cubin"])})
    # kernels/fp8_copies.py: the loop over e4m3 copies (precision="fp8", keys="copies").
    for c in kernel.FP8_COPIES_CONFIGS:
        m, n, warps, stages = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages
        compiled = compile_fp8_copies(m, n, warps, stages, head_dim=args.head_dim, dtype=args.dtype)
        rows.append({"arch": 90, "tile": f"{m}x{n}", "warps": warps, "stages": stages, "precision": "fp8",
                     "split_loads": True, "keys": "q, k, v quantized copies", "in_autotune_list": True,
                     "shared_kib": compiled.metadata.shared // 1024, **sass_stats(compiled.asm["cubin"])})
    # kernels/gluon_attention.py: the same copies, the softmax overlapped with p.v (not autotuned).
    for fp8, configs in ((False, GLUON_CONFIGS), (True, GLUON_FP8_CONFIGS)):
        for config in configs:
            parsed = parse_gluon_config(config, fp8)
            compiled = compile_gluon_attention(config, head_dim=args.head_dim, dtype=args.dtype, fp8=fp8)
            rows.append(_gluon_row(parsed, compiled, fp8, parsed.num_warps, "Gluon"))
    # kernels/gluon_ws_attention.py: warp-specialised; the loop counts are the first consumer's
    # (not the largest span: the partitions sit in a dispatch loop).
    for fp8, configs in ((False, GLUON_WS_CONFIGS), (True, GLUON_WS_FP8_CONFIGS)):
        for config in configs:
            parsed = parse_gluon_ws_config(config, fp8)
            compiled = compile_gluon_ws_attention(config, head_dim=args.head_dim, dtype=args.dtype, fp8=fp8)
            row = _gluon_row(parsed, compiled, fp8, "4+4+1", "Gluon, warp-specialised"
                             + (", pingpong" if parsed.pingpong else ""))
            rows.append({**row, **mma_loops(sass_text(compiled.asm["cubin"]))[0]})
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"triton {triton.__version__}, head_dim {args.head_dim}, {args.dtype}")
    print("| arch | tile | warps | stages | precision | keys | loads | listed | registers | spill instr. | shared KiB | LDG "
          "| LDGSTS | TMA | STS | instr. | tensor core | loop instr. | common path: instr. "
          + " ".join(LOOP_KINDS) + " |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        hot = " ".join(str(r["hot_path"].get(kind, 0)) for kind in LOOP_KINDS)
        print(f"| sm_{r['arch']} | {r['tile']} | {r['warps']} | {r['stages']} | {r['precision']} | {r['keys']} | "
              f"{'split' if r['split_loads'] else 'strided'} | {'yes' if r['in_autotune_list'] else ''} | "
              f"{r['registers']} | {r['spill_instructions']} | {r['shared_kib']} | {r['ldg']} | {r['ldgsts']} | {r['tma']} | "
              f"{r['sts']} | {r['instructions']} | {r['tensor_core']} | {r['loop_instructions']} | "
              f"{r['hot_path_instructions']}: {hot} |"
              + (f" setmaxnreg {'/'.join(map(str, r['setmaxnreg']))}" if r["setmaxnreg"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
