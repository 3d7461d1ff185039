"""`manifest.json`: how every graph in an export directory was made and how to feed it.

The engine build reads it (profiles, names, dtypes) instead of re-deriving anything, and
the sha256 of each graph's weight data lets a cache tell whether an engine was built from
the same weights.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
from pathlib import Path
from typing import Optional, Sequence

from .options import ExportOptions
from .record import GraphRecord

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
FORMAT = "sama-rt-onnx/1"
# polygraphy loads the external data to inspect a model; above this it would need the
# whole DiT in host memory, so big graphs get only our own summary.
POLYGRAPHY_MAX_BYTES = 2 << 30


def versions() -> dict:
    import onnx
    import torch

    from .. import __version__

    out = {"sama_rt": __version__, "torch": torch.__version__, "onnx": onnx.__version__}
    try:
        import onnxscript

        out["onnxscript"] = onnxscript.__version__
    except ImportError:
        pass
    return out


def polygraphy_summary(record: GraphRecord, timeout_s: float = 300) -> Optional[str]:
    """`polygraphy inspect model` output, or None when polygraphy is not installed or the
    graph's weights are too big to load for inspection."""
    exe = shutil.which("polygraphy")
    if exe is None or record.graph.weights_bytes > POLYGRAPHY_MAX_BYTES:
        return None
    result = subprocess.run(
        [exe, "inspect", "model", str(record.graph.onnx_path)],
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )
    if result.returncode != 0:
        logger.warning("polygraphy inspect failed for %s: %s", record.graph.onnx_path, result.stderr[-500:])
        return None
    return result.stdout


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def graph_entry(record: GraphRecord, model_dtype: str, with_polygraphy: bool = True) -> dict:
    """One graph: its spec flattened (inputs, outputs, axes, multiples, products,
    axis_ranges, profile: what the engine build reads), files, hashes, checks."""
    g = record.graph
    # Non-standard nodes as "domain::op_type" (the lint counts them that way).
    custom_ops = sorted(op for op in (record.lint.op_counts if record.lint else {}) if "::" in op)
    return {
        **record.spec.to_dict(record.ranges, model_dtype=model_dtype),
        "file": g.onnx_path.name,
        "data": g.data_path.name if g.data_path.exists() else None,
        "opset": g.opset,
        "graph_sha256": _sha256_file(g.onnx_path),  # the graph proto: ops, names, opset
        "weights_sha256": g.weights_sha256,  # the external data: the weights that went in
        "custom_ops": custom_ops,
        "config": record.config,
        "weights": {"bytes": g.weights_bytes, "initializers": g.num_initializers, "source": record.weights},
        "checker": record.checker,
        "lint": record.lint.to_dict() if record.lint else None,
        "export_seconds": round(g.export_seconds, 3),
        "polygraphy": polygraphy_summary(record) if with_polygraphy else None,
        **record.extra,
    }


def write_manifest(options: ExportOptions, records: Sequence[GraphRecord], with_polygraphy: bool = True) -> Path:
    """Write (or extend) `<out_dir>/manifest.json` with these graphs."""
    path = Path(options.out_dir) / MANIFEST_NAME
    b = options.buckets
    settings = {
        "opset": options.opset,
        "dtype": options.dtype,
        "attention": options.attention,
        "buckets": {"frames": list(b.frames), "resolutions": [list(r) for r in b.resolutions], "batch": list(b.batch)},
    }
    manifest = read_manifest(options.out_dir) if path.exists() else {"graphs": {}}
    clash = {k: manifest[k] for k in settings if k in manifest and manifest[k] != settings[k]}
    if clash:
        raise ValueError(
            f"{path} describes graphs exported with other settings {clash}; export into an empty directory"
        )
    manifest.update({"format": FORMAT, "versions": versions(), **settings})
    model_dtype = str(options.torch_dtype).replace("torch.", "")
    configs = manifest.setdefault("config", {})
    for record in records:
        manifest["graphs"][record.spec.name] = graph_entry(record, model_dtype, with_polygraphy)
        configs[record.family] = record.config
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def read_manifest(out_dir) -> dict:
    path = Path(out_dir) / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest
