"""`sama-rt bench`: time the edit path at real shapes with random weights.

Warm-up first, device synchronised around every timer, per-stage and per-step times,
achieved TFLOP/s from an analytic FLOP count, peak memory. `--compare-reference` runs the
official per-step computation (sama_rt.reference) on the same weights and inputs in the
same process and reports the speedup and the largest output difference.
"""
from __future__ import annotations

import json
import resource
import time
from dataclasses import asdict, dataclass

import torch

from .acceleration.runtime import RuntimeOptions
from .models.dit import DiTConfig

TEXT_LEN = 512


@dataclass(frozen=True)
class BenchConfig:
    config: str = "tiny"
    frames: int = 49
    height: int = 480
    width: int = 832
    steps: int = 3
    cfg_scale: float = 5.0
    warmup: int = 1
    device: str = "cpu"
    dtype: str = "float32"
    attention: str = "auto"
    backend: str = "torch"
    compare_reference: bool = False
    stages: bool = False  # also time one whole edit (text, VAE encode, denoise, VAE decode)
    profile: bool = False  # also profile one step: device time per kind of work
    num_anchor: int = 65
    prompt_tokens: int = 24  # real tokens of the positive prompt; the negative has 4
    seed: int = 0
    ulysses: int = 1  # multi-process degrees (launch with torchrun; see docs/PARALLEL.md)
    ring: int = 1
    cfg_parallel: bool = False
    parallel_timeout_s: float = 600.0
    cache_threshold: float = 0.0  # opt-in approximations, as in EditParams (0 / 1 / euler = off)
    cfg_skip_after: float = 1.0
    solver: str = "euler"
    runtime: RuntimeOptions = RuntimeOptions()  # offload, FP8 linears, compile, CUDA graphs
    peak_tflops: float | None = None  # dense bf16 peak for MFU; default: looked up by GPU name

    def __post_init__(self):
        if (self.frames - 1) % 4:
            raise ValueError(f"frames must be 4k+1 (e.g. 49, 81), got {self.frames}")
        if self.height % 16 or self.width % 16:
            raise ValueError(f"resolution must be a multiple of 16, got {self.height}x{self.width}")
        if self.steps < 1 or self.warmup < 0:
            raise ValueError("steps must be >= 1 and warmup >= 0")
        from .params import EditParams

        EditParams(cache_threshold=self.cache_threshold, cfg_skip_after=self.cfg_skip_after, solver=self.solver)
        self.runtime.check_device(self.device)
        self._check_backend()
        if self.compare_reference and self.runtime.fp8_linear:
            # The reference would run the same FP8 layers; the FP8 error against the exact
            # model is measured by benchmarks/fp8_linear.py.
            raise ValueError("--compare-reference times the exact model; do not combine it with --fp8-linear")
        if self.runtime.cuda_graphs and self.multi_process:
            raise ValueError("CUDA graphs are not captured around parallel steps; drop --cuda-graphs or the degrees")
        if self.runtime.cuda_graphs and self.cache_threshold > 0:
            raise ValueError("step caching cannot run inside CUDA graphs; drop --cuda-graphs or --cache-threshold")

    @property
    def multi_process(self) -> bool:
        return (self.ulysses, self.ring, self.cfg_parallel) != (1, 1, False)

    @property
    def approximations_on(self) -> bool:
        return self.cache_threshold > 0 or self.cfg_skip_after < 1

    def _check_backend(self) -> None:
        from .engines.backends import Backend

        backend = Backend.parse(self.backend)
        object.__setattr__(self, "backend", backend.value)
        if backend is Backend.TENSORRT:
            from .engines.tensorrt_adapter import tensorrt_status

            ok, why = tensorrt_status()
            raise ValueError(f"TensorRT cannot run here: {why}" if not ok else
                             "sama-rt bench does not time TensorRT engines; use trtexec --loadEngine")
        if self.stages and (backend is not Backend.TORCH or self.multi_process):
            raise ValueError("--stages times the torch backend in one process")
        if backend is Backend.ONNXRUNTIME:
            # The exported float32 graph on onnxruntime's CPU provider, called as the plain
            # model (batch-2 CFG, nothing cached): what `--backend onnxruntime` edits run.
            if self.device != "cpu" or self.dtype != "float32":
                raise ValueError("--backend onnxruntime runs the float32 graph on CPU (--device cpu --dtype float32)")
            if not self.runtime.is_default or self.approximations_on or self.multi_process:
                raise ValueError("--backend onnxruntime is timed without runtime options, approximations or parallelism")


# Dense bf16 tensor-core peaks (TFLOP/s, fp32 accumulation, no sparsity) from the vendor
# datasheets, for MFU. Matched in order against torch.cuda.get_device_name.
BF16_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),  # SXM
    ("H200", 989.4),
    ("H800", 989.4),
    ("A100", 312.0),
    ("L40S", 362.1),
)


def bf16_peak_tflops(device_name: str) -> float | None:
    for key, peak in BF16_PEAK_TFLOPS:
        if key in device_name:
            return peak
    return None


def latent_shape(frames: int, height: int, width: int) -> tuple[int, int, int, int, int]:
    return (1, 16, (frames - 1) // 4 + 1, height // 8, width // 8)


def dit_forward_flops(cfg: DiTConfig, grid: tuple[int, int, int], num_anchor: int = 65,
                      text_len: int = TEXT_LEN, batch: int = 1) -> int:
    """Multiply-adds x 2 of one DiT forward over [source | anchors | target].

    grid: tokens per axis (latent frames, latent h / patch, latent w / patch). Counts the
    dense work the released model does: linear layers, self-attention as 4*L^2*d per layer
    (QK^T and PV), cross-attention over all `text_len` context rows, embeddings and heads.
    """
    d, ffn = cfg.dim, cfg.ffn_dim
    n = grid[0] * grid[1] * grid[2]
    L = 2 * n + num_anchor
    patch = cfg.in_dim * grid_patch(cfg)
    flops = 2 * (2 * n) * patch * d  # patch embedding of source and target
    flops += 2 * num_anchor * (cfg.siglip_dim * cfg.siglip_hidden + cfg.siglip_hidden * d)
    flops += 2 * text_len * (cfg.text_dim * d + d * d)  # text embedding
    flops += 2 * (cfg.freq_dim * d + d * d + d * 6 * d)  # time embedding + projection
    per_block = (
        2 * L * 4 * d * d  # self-attention q, k, v, o
        + 4 * L * L * d  # self-attention scores and weighted sum
        + 2 * L * 2 * d * d + 2 * text_len * 2 * d * d  # cross-attention q, o and k, v
        + 4 * L * text_len * d  # cross-attention scores and weighted sum
        + 2 * L * 2 * d * ffn  # feed-forward
    )
    flops += cfg.num_layers * per_block
    flops += 2 * n * d * cfg.out_dim * grid_patch(cfg)  # head on target tokens
    flops += 2 * num_anchor * d * cfg.siglip_dim  # semantic head
    return batch * flops


def grid_patch(cfg: DiTConfig) -> int:
    pf, ph, pw = cfg.patch_size
    return pf * ph * pw


def token_grid(cfg: DiTConfig, shape) -> tuple[int, int, int]:
    pf, ph, pw = cfg.patch_size
    return shape[2] // pf, shape[3] // ph, shape[4] // pw


class _Clock:
    def __init__(self, device: torch.device):
        self.device = device

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


def _context(batch_rows: int, dim: int, real: int, gen: torch.Generator) -> torch.Tensor:
    ctx = torch.zeros(1, batch_rows, dim)
    ctx[:, :real] = torch.randn(1, real, dim, generator=gen)
    return ctx


def random_dit_inputs(cfg: DiTConfig, latents: tuple[int, ...], seed: int = 0, num_anchor: int = 65,
                      prompt_tokens: int = 24, negative_tokens: int = 4, device="cpu") -> tuple[torch.Tensor, ...]:
    """Seeded (source latents, noise, semantic noise, context, negative context) of one edit:
    the inputs every benchmark feeds the DiT. Contexts are zero past their real rows, as the
    text encoder leaves them."""
    gen = torch.Generator().manual_seed(seed)
    source = torch.randn(latents, generator=gen)
    noise = torch.randn(latents, generator=gen)
    semantic = torch.randn(1, num_anchor, cfg.siglip_dim, generator=gen)
    context = _context(TEXT_LEN, cfg.text_dim, prompt_tokens, gen)
    negative = _context(TEXT_LEN, cfg.text_dim, negative_tokens, gen)
    return tuple(t.to(device) for t in (source, noise, semantic, context, negative))


def _time_loop(predictor, noise, semantic, sigmas, clock) -> tuple[list[float], torch.Tensor]:
    """Euler loop like sampling.denoise, timing each step."""
    from .sampling import NUM_TRAIN_TIMESTEPS, euler_step

    x, s, times = noise, semantic, []
    n = len(sigmas)
    for i in range(n):
        start = clock.now()
        pred = predictor(x, s, sigmas[i:i + 1].to(x.device) * NUM_TRAIN_TIMESTEPS)
        sigma_next = float(sigmas[i + 1]) if i + 1 < n else 0.0
        x = euler_step(x, pred.latents.float(), float(sigmas[i]), sigma_next)
        s = euler_step(s, pred.semantic.float(), float(sigmas[i]), sigma_next)
        times.append(clock.now() - start)
    return times, x


def _time_solver(predictor, noise, semantic, sigmas, solver: str, clock) -> tuple[list[float], torch.Tensor]:
    """The loop of another solver (acceleration.solve), timing each step."""
    from .acceleration import solve

    marks = [clock.now()]
    x, _ = solve(predictor, noise, semantic, sigmas, solver, callback=lambda i, n: marks.append(clock.now()))
    return [b - a for a, b in zip(marks, marks[1:])], x


def _approximation_counts(predictor, bc: BenchConfig, num_layers: int) -> dict:
    """Model calls and (block x batch row) evaluations of the timed loop."""
    from .acceleration import model_evaluations

    calls = model_evaluations(bc.solver, bc.steps)
    stats = getattr(predictor, "stats", None)
    batch = 2 if bc.cfg_scale != 1.0 else 1
    return {"dit_calls": calls,
            "block_evaluations": stats.block_evaluations if stats is not None else calls * num_layers * batch,
            "cached_calls": stats.cached_calls if stats is not None else 0}


def _peak_memory(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"peak_memory_bytes": torch.cuda.max_memory_allocated(device), "memory_kind": "cuda_max_allocated"}
    return {"peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "memory_kind": "process_peak_rss"}


@torch.no_grad()
def run_bench(bc: BenchConfig) -> dict:
    from .acceleration.runtime import prepare_dit, wrap_predictor
    from .guided import GuidedPredictor
    from .models.attention import select_attention_backend
    from .models.dit import build_dit
    from .parallel import ParallelConfig, setup_parallel
    from .parallel.predictor import ParallelGuidedPredictor
    from .parallel.runtime import launched_world_size
    from .reference import official_guided_step
    from .sampling import flow_match_sigmas

    device = torch.device(bc.device)
    dtype = getattr(torch, bc.dtype)
    cfg = DiTConfig.preset(bc.config)
    groups = None
    if bc.multi_process or launched_world_size() > 1:
        # Degrees checked against the launch before the weights are built.
        groups = setup_parallel(
            ParallelConfig(ulysses=bc.ulysses, ring=bc.ring, cfg=bc.cfg_parallel, timeout_s=bc.parallel_timeout_s),
            cfg.num_heads, device,
        )
        device = groups.device if groups is not None else device
    clock = _Clock(device)
    editor = None
    if bc.stages:  # the Editor's DiT (same seed, same weights) serves the step timing too
        from .editor import Editor

        editor = Editor.from_config(bc.config, seed=bc.seed, device=device, dtype=dtype, attention=bc.attention,
                                    runtime=bc.runtime)
        dit = editor.dit
    else:
        dit = build_dit(cfg, dtype=dtype, device=bc.runtime.load_device(device), seed=bc.seed)
        prepare_dit(dit, device, bc.runtime)
        dit.with_attention(select_attention_backend(bc.attention, device, cfg.head_dim, dtype))
    attention_used = dit.attention.value  # what "auto" resolved to
    shape = latent_shape(bc.frames, bc.height, bc.width)
    source, noise, semantic, context, negative = random_dit_inputs(
        cfg, shape, bc.seed, bc.num_anchor, bc.prompt_tokens, device=device)
    sigmas = flow_match_sigmas(bc.steps)
    grid = token_grid(cfg, shape)
    batch = 2 if bc.cfg_scale != 1.0 else 1
    flops = dit_forward_flops(cfg, grid, bc.num_anchor, TEXT_LEN, batch)
    result = {"bench": asdict(bc), "device_name": _device_name(device), "attention_backend": attention_used,
              "sequence_length": 2 * grid[0] * grid[1] * grid[2] + bc.num_anchor,
              "flops_per_step": flops}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    if groups is not None:
        result["parallel"] = groups.config.describe()
    start = clock.now()
    if groups is not None:
        predictor = ParallelGuidedPredictor(dit, source, context, negative, bc.cfg_scale, groups)
    elif bc.backend == "onnxruntime":
        predictor = _onnxruntime_predictor(bc, dit, source, context, negative)
    else:
        predictor = wrap_predictor(GuidedPredictor(dit, source, context, negative, bc.cfg_scale), bc.runtime)
    result["prepare_s"] = clock.now() - start
    # With CUDA graphs the first call runs eagerly and the second captures: both belong to
    # the warm-up, so the timed steps are replays.
    for _ in range(max(bc.warmup, 2) if bc.runtime.cuda_graphs else bc.warmup):
        predictor(noise, semantic, sigmas[:1].to(device) * 1000)
    if bc.approximations_on:  # wrapped after the warm-up: its cache starts empty
        from .acceleration import approximate

        if groups is not None:
            raise ValueError("step caching and CFG skipping are not benchmarked in parallel runs")
        predictor = approximate(predictor, steps=bc.steps, shift=5.0, cfg_scale=bc.cfg_scale,
                                cache_threshold=bc.cache_threshold, cfg_skip_after=bc.cfg_skip_after)
    if bc.solver == "euler":
        times, ours = _time_loop(predictor, noise, semantic, sigmas, clock)
    else:
        times, ours = _time_solver(predictor, noise, semantic, sigmas, bc.solver, clock)
    result.update(_approximation_counts(predictor, bc, cfg.num_layers))
    if attention_used == "triton-gluon":
        from .kernels.gluon_attention import GLUON_CONFIGS

        result["attention_kernel_config"] = f"gluon {GLUON_CONFIGS[0]}"  # one config, not autotuned
    elif attention_used == "triton-gluon-ws":
        from .kernels.gluon_ws_attention import GLUON_WS_CONFIGS

        result["attention_kernel_config"] = f"gluon ws {GLUON_WS_CONFIGS[0]}"
    elif attention_used == "triton-gluon-ws-fp8":
        from .kernels.gluon_ws_attention import GLUON_WS_FP8_CONFIGS

        result["attention_kernel_config"] = f"gluon ws fp8 {GLUON_WS_FP8_CONFIGS[0]}"
    elif attention_used.startswith("triton"):
        from .kernels.anchor_attention import tuned_config

        result["attention_kernel_config"] = tuned_config()  # the autotuner's choice at this shape
    result["per_step_s"] = sum(times) / len(times)
    result["step_times_s"] = times
    result["tflops"] = flops / result["per_step_s"] / 1e12
    peak = bc.peak_tflops or (bf16_peak_tflops(result["device_name"]) if device.type == "cuda" else None)
    result["peak_tflops"] = peak
    result["mfu"] = result["tflops"] / peak if peak else None
    result.update(_peak_memory(device))
    if bc.profile:
        result["profile"] = profile_step(predictor, noise, semantic, sigmas[:1].to(device) * 1000, device)
    if editor is not None:
        result["stages"] = _time_stages(editor, bc)

    if bc.compare_reference:
        def reference(x, s, t):
            return official_guided_step(dit, x, s, t, source, context, negative, bc.cfg_scale)

        for _ in range(bc.warmup):
            reference(noise, semantic, sigmas[:1].to(device) * 1000)
        ref_times, ref_out = _time_loop(reference, noise, semantic, sigmas, clock)
        result["reference_per_step_s"] = sum(ref_times) / len(ref_times)
        result["speedup"] = result["reference_per_step_s"] / result["per_step_s"]
        result["max_abs_diff"] = float((ours - ref_out).abs().max())
        result["reference_max_abs"] = float(ref_out.abs().max())
    return result


# Where a step's time goes, by kernel (CUDA) or operator (CPU) name. First match wins.
PROFILE_CATEGORIES = (
    # The Triton attention's kernels, its pre-passes (rotated / quantized copies) included.
    ("attention", ("anchor_attention", "flash", "fmha", "attention", "scaled_dot_product", "softmax",
                   "rotate_keys_fwd", "copies_fwd", "quantize_rotated_fwd", "quantize_values_fwd")),
    ("gemm", ("gemm", "xmma", "cutlass", "nvjet", "cublas", "aten::mm", "aten::addmm", "aten::bmm",
              "aten::_scaled_mm", "aten::baddbmm", "conv")),
    ("norm", ("layer_norm", "rms_norm", "norm")),
    ("elementwise", ("elementwise", "vectorized", "aten::", "triton_", "copy", "cat", "reduce")),
)


def _category(name: str) -> str:
    lowered = name.lower()
    for category, needles in PROFILE_CATEGORIES:
        if any(needle in lowered for needle in needles):
            return category
    return "other"


def profile_step(predictor, noise, semantic, timestep, device: torch.device, top: int = 12) -> dict:
    """One step under torch.profiler: self time (ms) per category and the top entries.

    On CUDA it counts kernels on the device (what limits MFU); on CPU, operators' self time.
    """
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        predictor(noise, semantic, timestep)
        if cuda:
            torch.cuda.synchronize(device)
    rows = []
    for event in prof.key_averages():
        if cuda:
            if event.device_type != torch.autograd.DeviceType.CUDA:
                continue  # operators: their kernels are counted as kernels
            ms = getattr(event, "self_device_time_total", 0) / 1e3
        else:
            ms = event.self_cpu_time_total / 1e3
        if ms > 0:
            rows.append((event.key, ms, event.count))
    total = sum(ms for _, ms, _ in rows)
    categories: dict[str, float] = {}
    for name, ms, _ in rows:
        categories[_category(name)] = categories.get(_category(name), 0.0) + ms
    rows.sort(key=lambda r: -r[1])
    return {"clock": "device kernels" if cuda else "cpu operators", "total_ms": total,
            "categories_ms": dict(sorted(categories.items(), key=lambda kv: -kv[1])),
            "top": [{"name": name[:120], "ms": ms, "calls": calls} for name, ms, calls in rows[:top]]}


def _time_stages(editor, bc: BenchConfig) -> dict:
    """One edit of a synthetic clip of bc.frames frames near bc.height x bc.width through
    Editor.edit: seconds per stage, after a one-step warm-up edit when bc.warmup > 0."""
    from .params import EditParams
    from .video.synth import synth_frames

    frames = synth_frames(bc.frames, (bc.width, bc.height))
    params = EditParams(steps=bc.steps, cfg_scale=bc.cfg_scale, pixel_budget=bc.height * bc.width,
                        window=max(bc.frames, 81), cache_threshold=bc.cache_threshold,
                        cfg_skip_after=bc.cfg_skip_after, solver=bc.solver)
    if bc.warmup > 0:
        editor.edit(frames, "bench", params.replace(steps=1))
    edited = editor.edit(frames, "bench", params)
    stages = {k: v for k, v in edited.timings.items() if not isinstance(v, list)}
    stages["edited_resolution"] = f"{edited.frames.shape[1]}x{edited.frames.shape[2]}"
    return stages


def _onnxruntime_predictor(bc: BenchConfig, dit, source, context, negative):
    """CFG steps through the DiT exported from these weights (exported once, then cached)."""
    from .engines.backends import OnnxRuntimeDiT
    from .runners import DIT_GRAPH, export_cache_dir, export_in_memory
    from .sampling import guided_velocity

    onnx_dir = export_in_memory(export_cache_dir(f"{bc.config}-dit-only", bc.seed), dit)
    runner = OnnxRuntimeDiT(onnx_dir / DIT_GRAPH, dit.config)

    def predictor(x, s, timestep):
        return guided_velocity(runner, x, s, timestep, source, context, negative, bc.cfg_scale)

    return predictor


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def format_result(r: dict) -> str:
    b = r["bench"]
    lines = [
        f"config {b['config']}  {b['frames']} frames {b['height']}x{b['width']}  sequence {r['sequence_length']}"
        f"  {b['device']} {b['dtype']}  ({r['device_name']})",
        f"per step      {r['per_step_s']:.4f} s   {r['tflops']:.3f} TFLOP/s  ({r['flops_per_step'] / 1e12:.3f} TFLOP/step)"
        + (f"   MFU {r['mfu']:.1%} of {r['peak_tflops']:g}" if r.get("mfu") else ""),
        f"runtime       {RuntimeOptions(**b['runtime']).describe()}, attention {r['attention_backend']}, "
        f"backend {b['backend']}",
        f"prepare       {r['prepare_s']:.4f} s  (once per edit)",
        f"peak memory   {r['peak_memory_bytes'] / 2**30:.2f} GiB ({r['memory_kind']})",
    ]
    if (b["cache_threshold"], b["cfg_skip_after"], b["solver"]) != (0.0, 1.0, "euler"):
        lines.append(f"approximate   solver {b['solver']}, cache threshold {b['cache_threshold']:g}, CFG on the "
                     f"first {b['cfg_skip_after']:g} of steps: {r['dit_calls']} model calls, {r['cached_calls']} "
                     f"cached, {r['block_evaluations']} block evaluations")
    if "parallel" in r:
        lines.insert(1, f"parallel      {r['parallel']} (times of rank 0)")
    if "profile" in r:
        prof = r["profile"]
        lines.append(f"profile       ({prof['clock']}, {prof['total_ms']:.1f} ms) " + "  ".join(
            f"{k} {v / prof['total_ms']:.0%}" for k, v in prof["categories_ms"].items()))
    if "stages" in r:
        stages = {k: v for k, v in r["stages"].items() if isinstance(v, float)}
        lines.append(f"edit stages   ({r['stages']['edited_resolution']}) "
                     + "  ".join(f"{k} {v:.3f} s" for k, v in stages.items()))
    if "reference_per_step_s" in r:
        lines.append(f"reference     {r['reference_per_step_s']:.4f} s/step   speedup {r['speedup']:.2f}x   "
                     f"max |diff| {r['max_abs_diff']:.3g} (outputs up to {r['reference_max_abs']:.3g})")
    return "\n".join(lines)


def register(sub) -> None:
    from .cli import add_approximation_arguments, add_parallel_arguments, add_runtime_arguments
    from .models.attention import attention_backend_names

    p = sub.add_parser("bench", help="time the DiT step at real shapes with random weights")
    p.add_argument("--config", default="tiny", choices=["tiny", "medium", "sama-14b"])
    p.add_argument("--frames", type=int, default=49)
    p.add_argument("--resolution", default="480x832", help="HEIGHTxWIDTH in pixels")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    p.add_argument("--attention", default="auto", choices=attention_backend_names())
    p.add_argument("--backend", default="torch", choices=["torch", "onnxruntime", "tensorrt"],
                   help="onnxruntime: the exported float32 DiT graph on CPU (exported once, cached)")
    p.add_argument("--compare-reference", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--profile", action="store_true",
                   help="also profile one step: time per kind of work (attention, GEMM, norms, elementwise)")
    p.add_argument("--stages", action="store_true",
                   help="also time one whole edit of a synthetic clip: text, VAE encode, denoise, VAE decode")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="dense bf16 peak of the GPU for MFU (default: looked up from the GPU name)")
    add_runtime_arguments(p)
    add_parallel_arguments(p)
    add_approximation_arguments(p)
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    from .cli import UsageError, is_output_rank, runtime_options
    from .parallel import ParallelConfigError

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    try:
        h, w = (int(v) for v in args.resolution.lower().split("x"))
        bc = BenchConfig(config=args.config, frames=args.frames, height=h, width=w, steps=args.steps,
                         cfg_scale=args.cfg, warmup=args.warmup, device=device, dtype=dtype,
                         attention=args.attention, backend=args.backend,
                         compare_reference=args.compare_reference,
                         ulysses=args.ulysses, ring=args.ring, cfg_parallel=args.cfg_parallel,
                         parallel_timeout_s=args.parallel_timeout, cache_threshold=args.cache_threshold,
                         cfg_skip_after=args.cfg_skip_after, solver=args.solver,
                         runtime=runtime_options(args, device), peak_tflops=args.peak_tflops, stages=args.stages,
                         profile=args.profile)
    except ValueError as e:
        raise UsageError(str(e)) from None
    try:
        result = run_bench(bc)
    except ParallelConfigError as e:
        raise UsageError(str(e)) from None
    if is_output_rank():
        print(json.dumps(result) if args.json else format_result(result))
    return 0
