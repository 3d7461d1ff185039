"""Engine artifacts: `<name>.plan` (the serialized engine) + `<name>.json` (how it was built).

The json makes an engine self-describing: its build plan, cache key, the versions it was
built with, the sha256 of the weights and of the plan bytes, and the exact command that
rebuilds it. `load_artifact` refuses an engine that does not fit the current TensorRT,
GPU or weights, and says which command makes one that does.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Union

from .plan import EnginePlan

logger = logging.getLogger(__name__)

ARTIFACT_FORMAT_VERSION = 1
PathLike = Union[str, os.PathLike]


class StaleEngineError(RuntimeError):
    """The engine on disk was built for other weights, another TensorRT or another GPU."""


@dataclass(frozen=True)
class EngineArtifact:
    name: str
    plan_path: Path
    meta: dict

    @property
    def cache_key(self) -> str:
        return self.meta["cache_key"]

    @property
    def plan(self) -> dict:
        return self.meta["plan"]

    def read_plan_bytes(self) -> bytes:
        data = self.plan_path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != self.meta["plan_sha256"]:
            raise StaleEngineError(
                f"{self.plan_path} is corrupt or was replaced (sha256 {digest[:12]} != recorded "
                f"{self.meta['plan_sha256'][:12]}); rebuild it with:\n  {self.meta['rebuild_command']}"
            )
        return data


def artifact_paths(engine_dir: PathLike, name: str) -> tuple[Path, Path]:
    d = Path(engine_dir)
    return d / f"{name}.plan", d / f"{name}.json"


def write_artifact(
    engine_dir: PathLike,
    plan: EnginePlan,
    serialized_engine: bytes,
    rebuild_command: str,
    versions: Optional[dict] = None,
) -> EngineArtifact:
    """Write `<name>.plan` and `<name>.json`; the json last, so a crash leaves no valid pair."""
    from .. import __version__

    plan_path, json_path = artifact_paths(engine_dir, plan.name)
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.unlink(missing_ok=True)
    _atomic_write(plan_path, bytes(serialized_engine))
    meta = {
        "format": ARTIFACT_FORMAT_VERSION,
        "name": plan.name,
        "cache_key": plan.cache_key,
        "plan": plan.to_dict(),
        "versions": {"sama_rt": __version__, "tensorrt": plan.trt_version, **(versions or {})},
        "compute_capability": list(plan.compute_capability),
        "weights_sha256": plan.weights_sha256,
        "weights_bound": plan.weights_bound,
        "plan_sha256": hashlib.sha256(serialized_engine).hexdigest(),
        "plan_bytes": len(serialized_engine),
        "rebuild_command": rebuild_command,
    }
    _atomic_write(json_path, (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
    logger.info("wrote engine %s (%.1f MB, key %s)", plan_path, len(serialized_engine) / 1e6, plan.cache_key[:12])
    return EngineArtifact(plan.name, plan_path, meta)


def load_artifact(
    engine_dir: PathLike,
    name: str,
    trt_version: str,
    compute_capability: Iterable[int],
    weights_sha256: Optional[str] = None,
    expected_key: Optional[str] = None,
) -> EngineArtifact:
    """Read an engine's json and check it fits here; raises StaleEngineError if not.

    weights_sha256: the sha256 of the weights the caller will run (checked when the engine
    is bound to its weights, see EnginePlan.weights_bound; None skips the check only for
    engines that are refitted anyway). expected_key: a freshly planned cache key, if the
    caller has the export manifest at hand (catches any other change of the plan).
    """
    plan_path, json_path = artifact_paths(engine_dir, name)
    if not json_path.exists() or not plan_path.exists():
        raise FileNotFoundError(
            f"no engine {name!r} in {engine_dir} (need {plan_path.name} and {json_path.name}); "
            "build engines with `sama-rt build-engines --onnx-dir DIR --out ENGINES --precision bf16`"
        )
    meta = json.loads(json_path.read_text())
    if meta.get("format") != ARTIFACT_FORMAT_VERSION:
        raise StaleEngineError(_stale(meta, f"artifact format {meta.get('format')} != {ARTIFACT_FORMAT_VERSION}"))
    reasons = []
    if meta["versions"]["tensorrt"] != trt_version:
        reasons.append(f"built with TensorRT {meta['versions']['tensorrt']}, this is TensorRT {trt_version}")
    cc = [int(c) for c in compute_capability]
    if meta["compute_capability"] != cc:
        built = ".".join(map(str, meta["compute_capability"]))
        reasons.append(f"built for compute capability {built}, this GPU is {cc[0]}.{cc[1]}")
    if meta["weights_bound"]:
        if weights_sha256 is None:
            reasons.append("the engine is bound to its weights and no weights sha256 was given to check")
        elif weights_sha256 != meta["weights_sha256"]:
            reasons.append(
                f"built from weights {meta['weights_sha256'][:12]}, the current weights are {weights_sha256[:12]}"
            )
    if expected_key is not None and expected_key != meta["cache_key"]:
        reasons.append(f"its cache key {meta['cache_key'][:12]} != planned key {expected_key[:12]}")
    if reasons:
        raise StaleEngineError(_stale(meta, "; ".join(reasons)))
    return EngineArtifact(name, plan_path, meta)


def _stale(meta: dict, why: str) -> str:
    return (
        f"engine {meta.get('name')!r} does not fit here: {why}. Rebuild it with:\n"
        f"  {meta.get('rebuild_command', 'sama-rt build-engines ...')}"
    )


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def sha256_files(paths: Iterable[PathLike], chunk: int = 1 << 24) -> str:
    """sha256 over the bytes of several files in the given order (names not included)."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    return h.hexdigest()
