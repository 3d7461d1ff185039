"""One exported graph with everything the manifest says about it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

import onnx

from .graph import ExportedGraph
from .lint import LintReport, lint_model
from .spec import AxisRange, ModelSpec


@dataclass
class GraphRecord:
    graph: ExportedGraph
    spec: ModelSpec
    ranges: Mapping[str, AxisRange]
    config: dict
    weights: dict
    checker: Optional[str] = None
    lint: Optional[LintReport] = None
    extra: dict = field(default_factory=dict)

    @property
    def family(self) -> str:
        """The model a graph belongs to: dit, text_encoder or vae (its config's key)."""
        return "vae" if self.spec.name.startswith("vae_") else self.spec.name

    def verify(self) -> "GraphRecord":
        """onnx.checker full check (path form: works past 2 GB) and the TensorRT lint."""
        onnx.checker.check_model(str(self.graph.onnx_path), full_check=True)
        self.checker = "ok"
        self.lint = lint_model(self.graph.onnx_path, self.spec.name)
        return self
