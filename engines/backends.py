"""Runtime backends: the same submodel call signatures over torch, onnxruntime or TensorRT.

- `torch`: the nn.Modules themselves.
- `onnxruntime`: the exported graphs (CPU or CUDA provider). Makes the engine path runnable
  end to end on a machine without TensorRT, and runs the fp8/int8 Q/DQ graphs on CPU.
- `tensorrt`: built engines (engines.tensorrt_adapter): torch CUDA tensors bound zero-copy,
  shapes set per call, one stream, a CUDA graph per shape, one shared device workspace.

A DiT backend is a callable with SamaDiT.forward's signature,
`(latents, timestep, context, source_latents, semantic_latents) -> (noise_pred, semantic_pred)`,
float32 outputs; a text-encoder backend has UMT5Encoder.forward's, `(ids, mask) -> context`.
The exported DiT graph takes what the graph cannot compute exactly (float64 sinusoid, RoPE
tables) as inputs: `dit_graph_inputs` computes them on the host exactly as SamaDiT does.

`select_backend` is the one place that chooses; it is pure and logs why.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

import torch

from ..models.dit import DiTConfig, sinusoid_embedding
from ..choices import Choice
from ..models.rope import rope_tables

logger = logging.getLogger(__name__)


class Backend(Choice):
    TORCH = "torch"
    ONNXRUNTIME = "onnxruntime"
    TENSORRT = "tensorrt"


@dataclass(frozen=True)
class BackendSupport:
    """Whether a backend can run here, why not if not, and what it can do."""

    backend: Backend
    available: bool
    reason: str
    capabilities: tuple[str, ...] = ()


def probe_backends() -> dict[Backend, BackendSupport]:
    """Look at this machine (imports, CUDA); the facts `select_backend` decides on."""
    cuda = torch.cuda.is_available()
    out = {
        Backend.TORCH: BackendSupport(
            Backend.TORCH, True, "torch " + torch.__version__ + (" with CUDA" if cuda else " on CPU"),
            ("dit", "text_encoder", "vae", "bf16", "fp32") + (("fp16",) if cuda else ()),
        )
    }
    try:
        import onnxruntime as ort

        providers = ort.get_available_providers()
        caps = ("dit", "text_encoder", "fp32 graphs", "fp8/int8 Q/DQ graphs")
        caps += ("CUDAExecutionProvider",) if "CUDAExecutionProvider" in providers else ("CPUExecutionProvider",)
        out[Backend.ONNXRUNTIME] = BackendSupport(Backend.ONNXRUNTIME, True, f"onnxruntime {ort.__version__}", caps)
    except ImportError:
        out[Backend.ONNXRUNTIME] = BackendSupport(
            Backend.ONNXRUNTIME, False, "onnxruntime is not installed (pip install 'sama-rt[export]')"
        )
    from .tensorrt_adapter import tensorrt_status

    ok, why = tensorrt_status()
    out[Backend.TENSORRT] = BackendSupport(
        Backend.TENSORRT, ok, why, ("dit", "text_encoder", "bf16", "fp16", "fp8", "int8") if ok else ()
    )
    return out


def select_backend(
    requested: "str | Backend",
    support: Mapping[Backend, BackendSupport],
    have_engines: bool = False,
    have_onnx: bool = False,
) -> Backend:
    """Choose the backend. `requested` is a backend name or "auto".

    auto: TensorRT when it can run here and engines exist; otherwise torch (onnxruntime is
    never faster than torch for these models, so it is only used when asked for).
    An explicit request that cannot run here raises, saying why.
    """
    if requested == "auto":
        trt = support.get(Backend.TENSORRT)
        if trt is not None and trt.available and have_engines:
            logger.info("backend: tensorrt (engines found; %s)", trt.reason)
            return Backend.TENSORRT
        why = "no engines" if not have_engines else (trt.reason if trt else "tensorrt not probed")
        logger.info("backend: torch (tensorrt not used: %s)", why)
        return Backend.TORCH
    backend = Backend.parse(requested, also_valid=("auto",))
    s = support.get(backend)
    if s is None or not s.available:
        raise RuntimeError(f"backend {backend.value!r} cannot run here: {s.reason if s else 'not probed'}")
    if backend is Backend.TENSORRT and not have_engines:
        raise RuntimeError(
            "backend 'tensorrt' needs engines: build them with "
            "`sama-rt build-engines --onnx-dir DIR --out ENGINES --precision bf16`"
        )
    if backend is Backend.ONNXRUNTIME and not have_onnx:
        raise RuntimeError("backend 'onnxruntime' needs exported graphs: run `sama-rt export ... --out DIR` first")
    logger.info("backend: %s (requested; %s)", backend.value, s.reason)
    return backend


# -- the DiT graph's host-computed inputs ------------------------------------------------------
def dit_graph_inputs(
    config: DiTConfig,
    latents: torch.Tensor,
    timestep: torch.Tensor,
    context: torch.Tensor,
    source_latents: torch.Tensor,
    semantic_latents: torch.Tensor,
    timestep_dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """The exported DiT graph's inputs for a SamaDiT.forward call, float32.

    time_sinusoid: the timestep rounded to the weights' dtype (as SamaDiT.embed_time does:
    a bf16 model sees 909.09 as 908), then the float64 sinusoid; rope_cos / rope_sin: the
    video RoPE tables [F*H*W, head_dim/2] of the patch grid.
    """
    batch = latents.shape[0]
    t = torch.as_tensor(timestep, device=latents.device).reshape(-1).to(timestep_dtype)
    t = t.expand(batch) if t.numel() == 1 else t
    sinusoid = sinusoid_embedding(config.freq_dim, t).to(timestep_dtype).float()
    pf, ph, pw = config.patch_size
    _, _, f, h, w = latents.shape
    cos, sin = rope_tables(f // pf, h // ph, w // pw, config.head_dim, device=latents.device)
    return {
        "latents": latents.float(),
        "source_latents": source_latents.float(),
        "semantic_latents": semantic_latents.float(),
        "context": context.float(),
        "time_sinusoid": sinusoid,
        "rope_cos": cos.float(),
        "rope_sin": sin.float(),
    }


# -- onnxruntime ---------------------------------------------------------------------------
class OnnxRuntimeGraph:
    """One exported graph in an onnxruntime session; torch tensors in, torch tensors out."""

    def __init__(self, onnx_path, providers: Optional[Sequence[str]] = None, threads: Optional[int] = None):
        import onnxruntime as ort

        from .quantize import ORT_DISABLED_OPTIMIZERS

        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        # onnxruntime's idle worker threads spin by default; between graph calls torch runs
        # (the Euler step, a reference, the other models), and spinning threads take its cores
        # (measured: a torch step beside an idle session ran 2x slower on 2 cores).
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = Path(onnx_path)
        self.session = ort.InferenceSession(
            str(self.path), so, providers=list(providers or ["CPUExecutionProvider"]),
            disabled_optimizers=list(ORT_DISABLED_OPTIMIZERS),
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._input_types = {i.name: i.type for i in self.session.get_inputs()}

    def __call__(self, feeds: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise ValueError(f"{self.path.name} needs inputs {missing}; given {sorted(feeds)}")
        arrays = {}
        for name in self.input_names:
            t = feeds[name].detach().cpu()
            if self._input_types[name] == "tensor(float16)":
                t = t.half()
            arrays[name] = t.numpy()
        outs = self.session.run(self.output_names, arrays)
        return {n: torch.from_numpy(o) for n, o in zip(self.output_names, outs)}


class OnnxRuntimeDiT:
    """The exported DiT graph with SamaDiT.forward's call signature."""

    def __init__(self, onnx_path, config: DiTConfig, providers: Optional[Sequence[str]] = None,
                 timestep_dtype: torch.dtype = torch.float32, threads: Optional[int] = None):
        self.config = config
        self.graph = OnnxRuntimeGraph(onnx_path, providers, threads)
        self.timestep_dtype = timestep_dtype
        self.device = torch.device("cpu")
        self.dtype = torch.float32

    def __call__(self, latents, timestep, context, source_latents, semantic_latents):
        feeds = dit_graph_inputs(self.config, latents, timestep, context, source_latents, semantic_latents,
                                 self.timestep_dtype)
        out = self.graph(feeds)
        device = latents.device
        return out["noise_pred"].float().to(device), out["semantic_pred"].float().to(device)


class OnnxRuntimeTextEncoder:
    """The exported text-encoder graph with UMT5Encoder.forward's signature `(ids, mask) -> context`."""

    def __init__(self, onnx_path, providers: Optional[Sequence[str]] = None, threads: Optional[int] = None):
        self.graph = OnnxRuntimeGraph(onnx_path, providers, threads)

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = self.graph({"ids": ids.long(), "mask": mask.long()})
        return next(iter(out.values())).float().to(ids.device)


# -- TensorRT ------------------------------------------------------------------------------
class TensorRTDiT:
    """A DiT engine with SamaDiT.forward's call signature (CUDA tensors in and out)."""

    def __init__(self, engine, config: DiTConfig, timestep_dtype: torch.dtype = torch.bfloat16):
        self.engine = engine  # tensorrt_adapter.EngineRunner
        self.config = config
        self.timestep_dtype = timestep_dtype
        self.device = torch.device("cuda")
        self.dtype = timestep_dtype

    def __call__(self, latents, timestep, context, source_latents, semantic_latents):
        feeds = dit_graph_inputs(self.config, latents, timestep, context, source_latents, semantic_latents,
                                 self.timestep_dtype)
        out = self.engine.run(feeds)
        return out["noise_pred"].float(), out["semantic_pred"].float()


class TensorRTTextEncoder:
    def __init__(self, engine):
        self.engine = engine

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = self.engine.run({"ids": ids.long(), "mask": mask.long()})
        return next(iter(out.values())).float()
