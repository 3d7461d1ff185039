"""`sama-rt` command line: arguments -> dataclass -> one library call.

Exit codes: 0 ok, 2 usage error, 1 failure (one line naming the cause; the full traceback
with --verbose).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

DTYPES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16",
          "float32": "float32", "fp32": "float32"}


class UsageError(Exception):
    """Bad arguments discovered after parsing (reported with exit code 2)."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _resolution(text: str) -> tuple[int, int]:
    """'480x832' -> (height, width)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH like 480x832, got {text!r}") from None
    if h < 32 or w < 32:
        raise argparse.ArgumentTypeError(f"resolution too small: {text}")
    return h, w


def _torch_dtype(name: str):
    import torch

    return getattr(torch, DTYPES[name])


# -- edit ---------------------------------------------------------------------------------
def add_model_arguments(p: argparse.ArgumentParser) -> None:
    from .models.attention import attention_backend_names

    g = p.add_argument_group("model")
    g.add_argument("--wan-dir", type=Path, help="Wan2.1-T2V-14B directory (shards, umT5, VAE, tokenizer)")
    g.add_argument("--sama-checkpoint", type=Path, help="SAMA-14B .safetensors")
    g.add_argument("--config", choices=["tiny", "medium", "sama-14b"],
                   help="random weights at a preset size instead of a checkpoint (no meaningful edit)")
    g.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    g.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="default: bfloat16 on CUDA, float32 on CPU")
    g.add_argument("--attention", default="auto", choices=attention_backend_names(),
                   help="self-attention: auto runs triton-gluon-ws on a Hopper GPU (the fastest measured there, "
                        "1.08-1.11x cuDNN SDPA on an H200) and SDPA elsewhere; triton runs the fused "
                        "anchor-attention kernel, triton-in-loop the same kernel rotating keys in its loop "
                        "(less memory, slower), triton-fp8 its FP8 variant (an approximation), triton-copies its "
                        "form over rotated copies of q, k, v (Hopper; more memory), triton-fp8-copies that form "
                        "in FP8 (Hopper; an approximation), triton-gluon the copies form in Gluon, "
                        "triton-gluon-ws that form warp-specialised (Hopper), triton-gluon-ws-fp8 that in FP8 "
                        "(Hopper; an approximation, the fastest: 1.27-1.35x cuDNN SDPA on an H200)")
    g.add_argument("--backend", default="torch", choices=["torch", "onnxruntime", "tensorrt", "auto"],
                   help="what runs the models (onnxruntime: exported graphs; tensorrt: engines)")
    g.add_argument("--onnx-dir", type=Path, help="graphs from `sama-rt export` (--backend onnxruntime)")
    g.add_argument("--engine-dir", type=Path, help="engines from `sama-rt build-engines` (--backend tensorrt)")
    g.add_argument("--seed-weights", type=int, default=0, help="seed of the random weights (--config)")
    add_runtime_arguments(p)


def add_runtime_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("runtime (torch backend)")
    g.add_argument("--offload", default="none", choices=["none", "blocks"],
                   help="blocks: keep the DiT blocks in host memory and stream them to the GPU "
                        "(low-memory mode for 24-48 GB cards; same output, slower)")
    g.add_argument("--fp8-linear", action="store_true",
                   help="run the blocks' linear layers as FP8 GEMMs (approximate; Ada/Hopper, bfloat16)")
    g.add_argument("--compile", action="store_true", help="torch.compile the DiT blocks (CUDA)")
    g.add_argument("--cuda-graphs", action="store_true", help="replay each denoising step as a CUDA graph (CUDA)")


def runtime_options(args, device: str):
    """RuntimeOptions from the flags, checked against the device (a usage error if wrong)."""
    from .acceleration.runtime import RuntimeOptions

    try:
        options = RuntimeOptions(offload=args.offload, fp8_linear=args.fp8_linear,
                                 compile_blocks=args.compile, cuda_graphs=args.cuda_graphs)
        options.check_device(device)
        return options
    except ValueError as e:
        raise UsageError(str(e)) from None


def add_parallel_arguments(p: argparse.ArgumentParser) -> None:
    from .parallel.config import DEFAULT_TIMEOUT_S

    g = p.add_argument_group("multi-GPU (launch with torchrun --nproc-per-node N -m sama_rt ...)")
    g.add_argument("--ulysses", type=_positive_int, default=1, metavar="K",
                   help="sequence-parallel degree (all-to-all over attention heads; divides the head count)")
    g.add_argument("--ring", type=_positive_int, default=1, metavar="R",
                   help="ring-attention degree (any head count)")
    g.add_argument("--cfg-parallel", action="store_true",
                   help="positive and negative guidance passes on different halves of the processes")
    g.add_argument("--parallel-timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                   help="a rank that waits this long on another fails the run (default %(default)s)")


def parallel_config(args):
    """ParallelConfig of the flags, or None for a one-process run (no flags, one process)."""
    from .parallel import ParallelConfig
    from .parallel.runtime import launched_world_size

    config = ParallelConfig(ulysses=args.ulysses, ring=args.ring, cfg=args.cfg_parallel,
                            timeout_s=args.parallel_timeout)
    if config.world_size == 1 and launched_world_size() == 1:
        return None
    return config  # a mismatch with the launch is reported before any weight loads


def is_output_rank() -> bool:
    """Whether this process prints results: always, except ranks > 0 of a multi-process run."""
    from .parallel.runtime import launched_world_size

    return launched_world_size() == 1 or int(os.environ.get("RANK", "0")) == 0


def build_editor(args):
    from .parallel import ParallelConfigError

    try:
        parallel = parallel_config(args)
        return _build_editor(args, parallel)
    except ParallelConfigError as e:
        raise UsageError(str(e)) from None


def _build_editor(args, parallel):
    import torch

    from .editor import Editor

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype_name = args.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    dtype = _torch_dtype(dtype_name)
    runtime = runtime_options(args, device)
    backend = args.backend
    if backend == "auto":
        backend = "tensorrt" if args.engine_dir else "onnxruntime" if args.onnx_dir else "torch"
    if backend != "torch" and not runtime.is_default:
        raise UsageError(f"--offload/--fp8-linear/--compile/--cuda-graphs apply to --backend torch, not {backend}")
    if args.config:
        if args.wan_dir or args.sama_checkpoint:
            raise UsageError("--config uses random weights; do not combine it with --wan-dir/--sama-checkpoint")
        if backend == "tensorrt":
            raise UsageError("--backend tensorrt needs engines built from real weights (--engine-dir with "
                             "--wan-dir/--sama-checkpoint), not --config")
        return Editor.from_config(args.config, seed=args.seed_weights, device=device, dtype=dtype,
                                  attention=args.attention, parallel=parallel, backend=backend,
                                  onnx_dir=args.onnx_dir, runtime=runtime)
    if not (args.wan_dir and args.sama_checkpoint):
        raise UsageError("give --wan-dir and --sama-checkpoint (the released weights), or --config tiny")
    if backend == "tensorrt":
        if not args.engine_dir:
            raise UsageError("--backend tensorrt needs --engine-dir (from `sama-rt build-engines`)")
        return Editor.from_engines(args.engine_dir, args.wan_dir, args.sama_checkpoint, device=device, dtype=dtype)
    if backend == "onnxruntime" and not args.onnx_dir:
        raise UsageError("--backend onnxruntime needs --onnx-dir (from `sama-rt export`)")
    return Editor.from_pretrained(args.wan_dir, args.sama_checkpoint, device=device, dtype=dtype,
                                  attention=args.attention, parallel=parallel, backend=backend,
                                  onnx_dir=args.onnx_dir, runtime=runtime)


def add_edit_params(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("edit")
    g.add_argument("--steps", type=_positive_int, default=50)
    g.add_argument("--cfg", type=float, default=5.0, help="classifier-free guidance scale (>= 1)")
    g.add_argument("--shift", type=float, default=5.0)
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--max-frames", type=_positive_int, default=None,
                   help="edit at most this many source frames (default: the whole clip)")
    g.add_argument("--window", type=_positive_int, default=81,
                   help="frames per denoising pass (4k+1); longer clips are edited in overlapping windows")
    g.add_argument("--overlap", type=_positive_int, default=9, help="frames shared by consecutive windows (4j+1)")
    g.add_argument("--no-propagate-motion", dest="propagate_motion", action="store_false",
                   help="do not pin each window's first frames to the previous window's edit")
    g.add_argument("--crossfade", type=int, default=0, help="frames blended across each window seam (<= overlap)")
    g.add_argument("--no-reuse-anchor", dest="reuse_anchor", action="store_false",
                   help="do not pin every window's semantic latents to the first window's")
    g.add_argument("--resolution", type=_resolution, default=(480, 832),
                   help="HEIGHTxWIDTH; sets the pixel budget of the resolution buckets")
    g.add_argument("--tiled-vae", action="store_true", help="tiled VAE encode/decode (less memory)")
    g.add_argument("--crf", type=int, default=25, help="H.264 quality (lower is better)")
    g.add_argument("--dump-calibration", type=Path, default=None,
                   help="save the DiT inputs of this edit as a calibration set for fp8/int8 engines")
    add_approximation_arguments(p)


def add_approximation_arguments(p: argparse.ArgumentParser) -> None:
    """Opt-in approximations (all off by default; see docs/BENCHMARKS.md for their error)."""
    g = p.add_argument_group("approximations (change the output; off by default)")
    g.add_argument("--cache-threshold", type=float, default=0.0, metavar="T",
                   help="step caching: skip blocks 1..N-1 while the first block's residual changes by "
                        "less than T (relative L1) since they last ran; 0 = off")
    g.add_argument("--cfg-skip-after", type=float, default=1.0, metavar="F",
                   help="run guidance on the first fraction F of the steps, the positive pass only after; "
                        "1 = every step")
    g.add_argument("--solver", default="euler", choices=["euler", "heun", "dpm++2m"],
                   help="flow-ODE solver: euler (the release), heun (second order, 2 model calls per step), "
                        "dpm++2m (second order multistep, 1 call per step)")


def edit_params(args):
    from .params import EditParams

    h, w = args.resolution
    try:
        return EditParams(seed=args.seed, steps=args.steps, cfg_scale=args.cfg, shift=args.shift,
                          max_frames=args.max_frames, pixel_budget=h * w, tiled_vae=args.tiled_vae,
                          crf=args.crf, window=args.window, overlap=args.overlap,
                          propagate_motion=args.propagate_motion, reuse_anchor=args.reuse_anchor,
                          crossfade=args.crossfade, cache_threshold=args.cache_threshold,
                          cfg_skip_after=args.cfg_skip_after, solver=args.solver)
    except ValueError as e:
        raise UsageError(str(e)) from None


class ProgressBar:
    """tqdm over denoising steps, with a line per other stage."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if stage == "denoise":
            if self.bar is None:
                self.bar = tqdm(total=total, desc="denoise", unit="step", file=sys.stderr)
            self.bar.total = max(self.bar.total or 0, total)
            self.bar.update(done - self.bar.n)
            if done == total:
                self.bar.close()
                self.bar = None
        elif stage != "done":
            print(f"{stage} ...", file=sys.stderr)


def cmd_edit(args) -> int:
    from .timing import format_timings

    if not args.instruction.strip():
        raise UsageError("the instruction is empty: say what to change, e.g. \"Replace the swan with a white cat\"")
    inp, out = Path(args.input), Path(args.output)
    if out.resolve() == inp.resolve():
        raise UsageError(f"the output path is the input {inp}: choose another -o")
    if out.exists() and not args.overwrite:
        raise UsageError(f"{out} exists; pass --overwrite to replace it")
    params = edit_params(args)
    editor = build_editor(args)
    talk = is_output_rank()  # ranks > 0 of a torchrun launch stay silent and write nothing
    recorder = editor.record_calibration(stride=1, limit=None) if args.dump_calibration else None
    # Streams: each window is written as soon as it is edited (non-zero ranks write nothing).
    result = editor.edit_to_file(inp, args.instruction, out, params, overwrite=args.overwrite,
                                 progress=ProgressBar(talk and not args.quiet))
    if recorder is not None and talk:
        from .engines.calibration import save_calibration_set

        save_calibration_set(recorder.calibration, args.dump_calibration)
    if talk and not args.quiet:
        print(format_timings(result.timings), file=sys.stderr)
    if talk:
        print(result.path)
    return EXIT_OK


# -- info / demo ----------------------------------------------------------------------------
def cmd_info(args) -> int:
    from .info import collect_info, format_info

    info = collect_info()
    if args.json:
        import json

        print(json.dumps(info, indent=2))
    else:
        print(format_info(info))
    return EXIT_OK


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(args.out, steps=args.steps, overwrite=True, progress=ProgressBar(not args.quiet))
    return EXIT_OK


# -- wiring -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sama-rt", description="Instruction-guided video editing with SAMA-14B.")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("edit", help="edit a video as an instruction says")
    p.add_argument("input", help="input video file")
    p.add_argument("instruction", help='e.g. "Replace the swan with a white cat"')
    p.add_argument("-o", "--output", required=True, help="output .mp4 (written atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or timing table")
    add_model_arguments(p)
    add_parallel_arguments(p)
    add_edit_params(p)
    p.set_defaults(func=cmd_edit)

    p = sub.add_parser("info", help="versions, devices and which backends can run here")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("demo", help="edit a synthesized clip with the tiny random-weight model on CPU")
    p.add_argument("--out", type=Path, default=Path("sama-rt-demo"), help="output folder")
    p.add_argument("--steps", type=_positive_int, default=8)
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=cmd_demo)

    from .bench import register as register_bench

    register_bench(sub)

    from .engines import command as engines_command
    from .export import command as export_command

    p = sub.add_parser("export", help="export the DiT, umT5 encoder and VAE to ONNX")
    export_command.add_arguments(p)
    p.set_defaults(func=export_command.run)
    p = sub.add_parser("build-engines", help="build TensorRT engines from an export (needs TensorRT + GPU)")
    engines_command.add_arguments(p)
    p.set_defaults(func=engines_command.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return _end_process(args.func(args))
    except UsageError as e:
        parser.error(str(e))  # exits 2
    except KeyboardInterrupt:
        print("sama-rt: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the CLI's one place that turns errors into exit codes
        if args.verbose:
            raise
        # The message is the cause (loader errors list every bad key); no traceback.
        print(f"sama-rt: error{_rank_label()}: {str(e).strip() or type(e).__name__}", file=sys.stderr)
        return _end_process(EXIT_FAILURE)
    return EXIT_OK


def _rank_label() -> str:
    """' (rank R of N)' in a multi-process run: which rank failed, and why, is printed once."""
    if "torch.distributed" not in sys.modules:
        return ""
    from .parallel.runtime import failure_prefix

    return failure_prefix()


def _end_process(code: int) -> int:
    """A failing rank of a multi-process run exits at once, so its peers' collectives fail
    fast (or the launcher ends them) instead of waiting on it."""
    if "torch.distributed" not in sys.modules:
        return code
    from .parallel.runtime import finish

    return finish(code)


if __name__ == "__main__":
    sys.exit(main())
