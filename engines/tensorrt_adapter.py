"""The few real TensorRT calls: build a planned engine, register the AnchorAttention plugin,
refit a weight-stripped engine, and run engines on torch CUDA tensors.

Written against the TensorRT >= 10.8 Python API (`tensorrt`, `tensorrt.plugin`). Everything
that decides *what* to build lives in plan.py and is tested without TensorRT; this module only
executes an `EnginePlan`. Its tests (tests/engines/test_tensorrt.py) skip where TensorRT or a
GPU is missing; scripts/validate_tensorrt.sh exercises it end to end on a machine that has both.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Mapping, Optional

import torch

from .plan import ANCHOR_ATTENTION_PLUGIN, EnginePlan

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "install TensorRT >= 10.8 for your CUDA version (pip install 'sama-rt[tensorrt]', i.e. tensorrt-cu13, "
    "which downloads its libraries from NVIDIA's package index) on a machine with an NVIDIA GPU"
)


def tensorrt_status() -> tuple[bool, str]:
    """Whether engines can be built and run here, and why not."""
    try:
        import tensorrt as trt
    except Exception as e:  # ImportError, or OSError when libnvinfer is missing
        return False, f"tensorrt cannot be imported ({type(e).__name__}: {e}); {INSTALL_HINT}"
    if not torch.cuda.is_available():
        return False, f"tensorrt {trt.__version__} is installed but there is no CUDA device"
    return True, f"tensorrt {trt.__version__} on {torch.cuda.get_device_name()}"


def require_tensorrt():
    ok, why = tensorrt_status()
    if not ok:
        raise RuntimeError(f"TensorRT engines cannot be built or run here: {why}")
    import tensorrt as trt

    return trt


def tensorrt_version() -> str:
    import tensorrt as trt

    return trt.__version__


def gpu_compute_capability(device: int = 0) -> tuple[int, int]:
    return torch.cuda.get_device_capability(device)


# -- the AnchorAttention plugin ------------------------------------------------------------------
_registered = False


def register_anchor_attention_plugin(block_m: int = 128, block_n: int = 64, num_warps: int = 8, num_stages: int = 3):
    """Register `sama_rt::AnchorAttention` as a quickly deployable plugin with an AOT implementation.

    The ONNX parser maps the exported node (op_type AnchorAttention, attribute
    plugin_namespace "sama_rt") to it. The AOT implementation is the Triton kernel compiled
    to PTX for this GPU by kernels.aot; TensorRT embeds the PTX in the engine, so running an
    engine needs neither Python nor Triton. Launch contract: kernels/aot.py.
    """
    global _registered
    if _registered:
        return
    trt = require_tensorrt()
    import tensorrt.plugin as trtp

    from ..kernels.aot import compile_anchor_attention

    name = ANCHOR_ATTENTION_PLUGIN
    dtypes = {trt.float16: torch.float16, trt.bfloat16: torch.bfloat16, trt.float32: torch.float32}

    @trtp.register(name)
    def _desc(q: trtp.TensorDesc, k: trtp.TensorDesc, v: trtp.TensorDesc, cos: trtp.TensorDesc,
              sin: trtp.TensorDesc, num_anchor: int, num_heads: int, head_dim: int, scale: float) -> trtp.TensorDesc:
        return v.like()

    @trtp.autotune(name)
    def _autotune(q, k, v, cos, sin, outputs):
        # q, k, v and the output share one 16-bit (or fp32) type; the RoPE tables are fp32.
        return [trtp.AutoTuneCombination("FP16|BF16|FP32, FP16|BF16|FP32, FP16|BF16|FP32, FP32, FP32, FP16|BF16|FP32")]

    @trtp.aot_impl(name)
    def _aot(q: trtp.TensorDesc, k: trtp.TensorDesc, v: trtp.TensorDesc, cos: trtp.TensorDesc,
             sin: trtp.TensorDesc, num_anchor: int, num_heads: int, head_dim: int, scale: float,
             outputs, tactic: int):
        major, minor = gpu_compute_capability()
        kernel = compile_anchor_attention(
            head_dim, dtypes[q.dtype], block_m=block_m, block_n=block_n, num_warps=num_warps,
            num_stages=num_stages, arch=10 * major + minor, scale=scale,
            split_loads=major >= 9,  # as the autotune lists: vector loads pay off on Hopper only
        )
        scratch = [p for p in kernel.params if p.name.startswith("scratch_")]
        if scratch:
            logger.warning("kernel has %d unused scratch pointer parameter(s); TensorRT leaves them unset", len(scratch))
        shape = q.shape_expr  # [B, L, heads, D], contiguous
        seq, heads, dim = shape[1], shape[2], shape[3]
        batch_stride, token_stride = seq * heads * dim, heads * dim
        # Strides of q, k, v, out (batch, sequence, head), then num_heads, num_video, num_anchor.
        strides = [batch_stride, token_stride, dim] * 4
        num_video = cos.shape_expr[0]
        extra = trtp.SymIntExprs.from_tuple(
            [trtp.SymInt32(e) for e in strides + [heads, num_video, num_anchor]]
        )
        launch = trtp.KernelLaunchParams()
        launch.grid_x = trtp.cdiv(2 * num_video, block_m) + (1 if num_anchor > 0 else 0)
        launch.grid_y = shape[0] * heads
        launch.block_x = kernel.threads_per_block
        launch.shared_mem = kernel.shared_mem
        return kernel.kernel_name.encode(), kernel.ptx.encode(), launch, extra

    _registered = True
    logger.info("registered TensorRT plugin %s (AOT Triton kernel)", name)


# -- build ------------------------------------------------------------------------------------------
class _Progress:
    """Adapts TensorRT's IProgressMonitor to a callback(phase, step, total)."""

    def __new__(cls, trt, callback):
        class Monitor(trt.IProgressMonitor):
            def __init__(self):
                trt.IProgressMonitor.__init__(self)

            def phase_start(self, phase_name, parent_phase, num_steps):
                callback(phase_name, 0, num_steps)

            def step_complete(self, phase_name, step):
                callback(phase_name, step + 1, None)
                return True  # False would cancel the build

            def phase_finish(self, phase_name):
                pass

        return Monitor()


def build_engine(
    plan: EnginePlan,
    onnx_path: Path,
    timing_cache: Optional[Path] = None,
    progress: Optional[Callable[[str, int, Optional[int]], None]] = None,
) -> bytes:
    """Parse `onnx_path` and build the engine `plan` describes; returns the serialized engine."""
    trt = require_tensorrt()
    if plan.plugins:
        register_anchor_attention_plugin()
    log = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(log)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan.strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, log)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}:\n{errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
    config.builder_optimization_level = plan.builder_optimization_level
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    profile = builder.create_optimization_profile()
    for name, lo, opt, hi in plan.profile:
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    cache = None
    if timing_cache is not None:
        blob = Path(timing_cache).read_bytes() if Path(timing_cache).exists() else b""
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, ignore_mismatch=False)
    if progress is not None:
        config.progress_monitor = _Progress(trt, progress)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build {plan.name} (see the TensorRT log above)")
    if cache is not None:
        Path(timing_cache).write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


# -- refit ---------------------------------------------------------------------------------------------
def refit_engine(engine, weights: Mapping[str, torch.Tensor]) -> int:
    """Fill a weight-stripped (or refittable) engine with `weights` by name; returns how many.

    Tensors are converted to the dtype the engine expects and handed over from device memory.
    Raises naming the weights the engine needs that `weights` lacks.
    """
    trt = require_tensorrt()
    refitter = trt.Refitter(engine, trt.Logger(trt.Logger.WARNING))
    needed = list(refitter.get_all_weights())
    missing = [n for n in needed if n not in weights]
    if missing:
        raise KeyError(f"refit needs weights the checkpoint lacks: {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    keep = []  # the device copies must live until refit_cuda_engine returns
    torch_types = {trt.float32: torch.float32, trt.float16: torch.float16, trt.bfloat16: torch.bfloat16,
                   trt.int8: torch.int8, trt.fp8: torch.float8_e4m3fn, trt.int32: torch.int32, trt.int64: torch.int64}
    for name in needed:
        proto = refitter.get_weights_prototype(name)
        t = torch.as_tensor(weights[name]).to(device="cuda", dtype=torch_types[proto.dtype]).contiguous()
        if t.numel() != proto.count:
            raise ValueError(f"refit weight {name}: {t.numel()} values, the engine expects {proto.count}")
        keep.append(t)
        refitter.set_named_weights(name, trt.Weights(proto.dtype, t.data_ptr(), t.numel()), trt.TensorLocation.DEVICE)
    if not refitter.refit_cuda_engine():
        raise RuntimeError("TensorRT refit failed (see the TensorRT log above)")
    torch.cuda.synchronize()
    return len(needed)


# -- run ------------------------------------------------------------------------------------------------
class SharedWorkspace:
    """One device allocation that every engine's execution context uses (one runs at a time)."""

    def __init__(self):
        self.buffer = torch.empty(0, dtype=torch.uint8, device="cuda")

    def reserve(self, nbytes: int) -> torch.Tensor:
        if nbytes > self.buffer.numel():
            self.buffer = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
        return self.buffer


class EngineRunner:
    """Runs one engine on torch CUDA tensors: zero-copy bindings, shapes set per call, one
    stream shared by all runners, and a CUDA graph captured per input-shape combination."""

    def __init__(self, serialized: bytes, workspace: SharedWorkspace, stream: torch.cuda.Stream,
                 use_cuda_graphs: bool = True, refit_weights: Optional[Mapping[str, torch.Tensor]] = None):
        trt = require_tensorrt()
        self.trt = trt
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(serialized)
        if self.engine is None:
            raise RuntimeError("TensorRT could not deserialize the engine (built by another TensorRT version?)")
        if refit_weights is not None:
            refit_engine(self.engine, refit_weights)
        self.context = self.engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        self.workspace, self.stream, self.use_cuda_graphs = workspace, stream, use_cuda_graphs
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == mode]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) != mode]
        self._torch_types = {trt.float32: torch.float32, trt.float16: torch.float16, trt.bfloat16: torch.bfloat16,
                             trt.int32: torch.int32, trt.int64: torch.int64, trt.int8: torch.int8, trt.bool: torch.bool}
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, dict, dict]] = {}
        # Reserve now so that all runners sized before the first call share one allocation.
        self.workspace.reserve(self._device_memory_size())

    def _device_memory_size(self) -> int:
        if hasattr(self.engine, "get_device_memory_size_v2"):  # TensorRT >= 10.1
            return self.engine.get_device_memory_size_v2()
        return self.engine.device_memory_size

    def _bind(self, feeds: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for name in self.inputs:
            t = feeds[name]
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        outs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = self._torch_types[self.engine.get_tensor_dtype(name)]
            outs[name] = torch.empty(shape, dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, outs[name].data_ptr())
        ws = self.workspace.reserve(self._device_memory_size())
        self.context.set_device_memory(ws.data_ptr(), ws.numel())
        return outs

    def _prepared(self, feeds: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        prepared = {}
        for name in self.inputs:
            if name not in feeds:
                raise KeyError(f"engine input {name!r} not given; given {sorted(feeds)}")
            want = self._torch_types[self.engine.get_tensor_dtype(name)]
            prepared[name] = feeds[name].to(device="cuda", dtype=want).contiguous()
        return prepared

    def run(self, feeds: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        feeds = self._prepared(feeds)
        current = torch.cuda.current_stream()
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            if not self.use_cuda_graphs:
                outs = self._bind(feeds)
                if not self.context.execute_async_v3(self.stream.cuda_stream):
                    raise RuntimeError("TensorRT execution failed")
            else:
                outs = self._replay(feeds)
        current.wait_stream(self.stream)
        return outs

    def _replay(self, feeds: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # Graphs bake in the workspace address: a grown workspace invalidates them.
        key = (self.workspace.buffer.data_ptr(),) + tuple((n, tuple(t.shape)) for n, t in feeds.items())
        if key not in self._graphs:
            static_in = {n: t.clone() for n, t in feeds.items()}
            static_out = self._bind(static_in)
            # One plain run first: TensorRT finishes shape-dependent setup outside capture.
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            self.stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self.stream):
                self.context.execute_async_v3(self.stream.cuda_stream)
            self._graphs[key] = (graph, static_in, static_out)
            logger.debug("captured a CUDA graph for %s", key)
        graph, static_in, static_out = self._graphs[key]
        self._bind_static(static_in, static_out)
        for n, t in feeds.items():
            static_in[n].copy_(t)
        graph.replay()
        return {n: t.clone() for n, t in static_out.items()}

    def _bind_static(self, static_in, static_out) -> None:
        # The graph baked in these addresses and shapes; set them again in case another shape ran since.
        for name, t in static_in.items():
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        for name, t in static_out.items():
            self.context.set_tensor_address(name, t.data_ptr())
