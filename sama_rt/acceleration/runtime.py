"""How the torch backend runs the DiT, fixed once per Editor: `RuntimeOptions`.

None of these changes what is computed except `fp8_linear` (an approximation, measured in
docs/BENCHMARKS.md); `compile_blocks` changes float rounding only (fused elementwise work).
They act at two moments: on the loaded models (`prepare_dit`: FP8 weights, compilation,
block streaming; `prepare_text_encoder`: kept in host memory in the low-memory mode) and on
each edit's per-step predictor (`wrap_predictor`: CUDA graphs).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .offload import Offload


@dataclass(frozen=True)
class RuntimeOptions:
    offload: str = "none"  # "blocks": low-memory mode, DiT blocks streamed from host memory,
    # the text encoder on the device only while it encodes
    fp8_linear: bool = False  # block linear layers as e4m3 GEMMs (approximate; sm_89+ on CUDA)
    compile_blocks: bool = False  # torch.compile each block (CUDA only)
    cuda_graphs: bool = False  # capture each step as a CUDA graph per shape (CUDA only)

    def __post_init__(self):
        offload = Offload.parse(self.offload)
        object.__setattr__(self, "offload", offload.value)
        if offload is Offload.BLOCKS:
            # The offloader swaps parameters under the model: compiled graphs and captured
            # CUDA graphs would keep stale addresses, and FP8 weights are buffers it never moves.
            for name in ("fp8_linear", "compile_blocks", "cuda_graphs"):
                if getattr(self, name):
                    raise ValueError(f"offload='blocks' cannot be combined with {name}")

    @property
    def is_default(self) -> bool:
        return self == RuntimeOptions()

    @property
    def streams_blocks(self) -> bool:
        return Offload.parse(self.offload) is Offload.BLOCKS

    def load_device(self, device) -> torch.device:
        """Where the weights should be loaded: host memory when the blocks are streamed."""
        return torch.device("cpu") if self.streams_blocks else torch.device(device)

    def check_device(self, device) -> None:
        device = torch.device(device)
        for name in ("compile_blocks", "cuda_graphs"):
            if getattr(self, name) and device.type != "cuda":
                raise ValueError(f"{name} runs on CUDA only; the model is on {device}")

    def describe(self) -> str:
        on = [name for name in ("fp8_linear", "compile_blocks", "cuda_graphs") if getattr(self, name)]
        if self.streams_blocks:
            on.insert(0, "offload=blocks")
        return ", ".join(on) or "default"


def prepare_dit(dit, device, options: RuntimeOptions):
    """Apply the model-level options to a DiT loaded at `options.load_device(device)`."""
    options.check_device(device)
    if options.fp8_linear:
        from .fp8_linear import convert_to_fp8_linear

        convert_to_fp8_linear(dit)
    if options.streams_blocks:
        from .offload import enable_block_offload

        enable_block_offload(dit, device)
    if options.compile_blocks:
        from .compiled import compile_blocks

        compile_blocks(dit)
    return dit


def prepare_text_encoder(text_encoder, device, options: RuntimeOptions):
    """The text encoder as the Editor should call it: in the low-memory mode it stays in host
    memory (loaded at `options.load_device(device)`) and visits `device` per call."""
    if not options.streams_blocks:
        return text_encoder
    from .offload import ModuleOnDemand

    return ModuleOnDemand(text_encoder, device)


def wrap_predictor(predictor, options: RuntimeOptions):
    """The per-step predictor of one edit, replayed from CUDA graphs when asked."""
    if not options.cuda_graphs:
        return predictor
    from .cuda_graphs import CudaGraphPredictor

    return CudaGraphPredictor(predictor)
