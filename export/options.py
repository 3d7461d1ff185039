"""What an export run is asked to produce: one frozen record, built once from the CLI."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from .spec import ShapeBuckets

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
ATTENTION_MODES = ("plugin", "plain")
# torch's dynamo exporter emits opset >= 18 only (a request for 17 silently becomes 18);
# TensorRT 10 parses up to 22; opset 23 turns attention and RMS norms into new ops.
MIN_OPSET, MAX_OPSET, DEFAULT_OPSET = 18, 22, 20
# ONNX's Conv accepts bfloat16 only from opset 22 (every other op we emit has it earlier).
BF16_MIN_OPSET = 22


@dataclass(frozen=True)
class ExportOptions:
    out_dir: Path
    dtype: str = "bf16"
    opset: Optional[int] = None  # None: DEFAULT_OPSET, or BF16_MIN_OPSET for bf16
    attention: str = "plugin"  # "plugin": AnchorAttention node + local function; "plain": standard ops
    buckets: ShapeBuckets = field(default_factory=ShapeBuckets)

    def __post_init__(self):
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; valid: {', '.join(DTYPES)}")
        if self.attention not in ATTENTION_MODES:
            raise ValueError(f"unknown attention mode {self.attention!r}; valid: {', '.join(ATTENTION_MODES)}")
        if self.opset is None:
            object.__setattr__(self, "opset", BF16_MIN_OPSET if self.dtype == "bf16" else DEFAULT_OPSET)
        if self.dtype == "bf16" and self.opset < BF16_MIN_OPSET:
            raise ValueError(
                f"bf16 graphs need opset >= {BF16_MIN_OPSET} (ONNX's Conv takes bfloat16 from opset 22); "
                f"got {self.opset}"
            )
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise ValueError(
                f"opset {self.opset} is not supported: the exporter emits {MIN_OPSET}+ and "
                f"TensorRT 10 parses up to {MAX_OPSET}"
            )

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]
