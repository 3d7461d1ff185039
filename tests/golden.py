"""Paths to the golden tensors produced by the official implementation."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

GOLDEN_DIR = Path(os.environ.get("SAMA_GOLDEN_DIR", Path(__file__).resolve().parents[2] / "shared" / "golden"))


def golden_path(name: str) -> Path:
    path = GOLDEN_DIR / name
    if not path.exists():
        pytest.skip(f"golden file {path} not present (set SAMA_GOLDEN_DIR)")
    return path


def golden_json(name: str) -> dict:
    return json.loads(golden_path(name).read_text())


def golden_tensors(name: str) -> dict:
    from safetensors.torch import load_file

    return load_file(str(golden_path(name)))
