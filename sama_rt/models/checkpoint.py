"""Strict, memory-safe checkpoint loading.

Models are built on the meta device and their parameters are assigned one tensor at a
time from memory-mapped files, so peak host memory stays near one copy of the weights in
the target dtype. Loading is strict: every parameter must come from some file, and every
key in the files must belong to the model. Problems are collected and raised together in
one `CheckpointError` that names each key, the file it came from and what was expected.
"""
from __future__ import annotations

import json
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence, Union

import torch
from torch import nn

from ..device_memory import require_room_for_weights

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]

# Prefixes that wrap the real key names in files saved by common trainers. A prefix is
# stripped only when *every* key of a file carries it, so a real key is never renamed.
KNOWN_PREFIXES = ("pipe.dit.", "model.", "dit.", "module.")

# Keys under which torch pickles sometimes wrap the state dict (the Wan VAE: model_state).
WRAPPER_KEYS = ("model_state", "state_dict", "model")


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable, or does not fit the model."""


@dataclass(frozen=True)
class TensorSource:
    """Where one tensor of a checkpoint lives."""

    file: Path
    key: str  # the key inside the file (before prefix stripping)


class CheckpointIndex:
    """Maps model key -> source over one or more checkpoint files.

    Later files override earlier ones (Wan2.1 base shards first, SAMA fine-tune second).
    Tensors are read lazily: safetensors through `safe_open`, `.pth` through a
    `torch.load(mmap=True, weights_only=True)` that is kept open while loading.
    """

    def __init__(self, paths: Union[PathLike, Sequence[PathLike]]):
        if isinstance(paths, (str, Path)):
            paths = [paths]
        if not paths:
            raise CheckpointError("no checkpoint path given")
        self.sources: dict[str, TensorSource] = {}
        self._pth_cache: dict[Path, dict[str, torch.Tensor]] = {}
        self._shapes: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
        for path in paths:
            for file in _expand(Path(path)):
                self._add_file(file)

    def __contains__(self, key: str) -> bool:
        return key in self.sources

    def keys(self) -> Iterable[str]:
        return self.sources.keys()

    def files(self) -> list[Path]:
        return sorted({s.file for s in self.sources.values()})

    def meta(self, key: str) -> tuple[tuple[int, ...], torch.dtype]:
        """Shape and dtype of a tensor without reading its data."""
        return self._shapes[key]

    def get(self, key: str) -> torch.Tensor:
        src = self.sources[key]
        if src.file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(src.file), framework="pt") as f:
                return f.get_tensor(src.key)
        return self._pth_cache[src.file][src.key]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: v[0] for k, v in self._shapes.items()}

    # -- reading ---------------------------------------------------------------------
    def _add_file(self, file: Path) -> None:
        if file.suffix == ".safetensors":
            entries = _safetensors_entries(file)
        elif file.suffix in (".pth", ".pt", ".bin", ".ckpt"):
            tensors = _load_pth(file)
            self._pth_cache[file] = tensors
            entries = {k: (tuple(v.shape), v.dtype) for k, v in tensors.items()}
        else:
            raise CheckpointError(
                f"{file}: unsupported checkpoint format {file.suffix!r}; "
                "expected .safetensors, a directory of Wan2.1 shards, or a .pth state dict"
            )
        prefix = _common_prefix(entries.keys())
        if prefix:
            logger.info("%s: stripping key prefix %r", file, prefix)
        for key, meta in entries.items():
            name = key[len(prefix):]
            self.sources[name] = TensorSource(file, key)
            self._shapes[name] = meta


def _expand(path: Path) -> list[Path]:
    """A file, or a directory holding Wan2.1-style shards with an index json."""
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_file():
        if path.name.endswith(".index.json"):
            return _shards_from_index(path)
        return [path]
    indexes = sorted(path.glob("*.safetensors.index.json"))
    if len(indexes) == 1:
        return _shards_from_index(indexes[0])
    if len(indexes) > 1:
        raise CheckpointError(
            f"{path}: several shard indexes {[i.name for i in indexes]}; pass the one to use"
        )
    singles = sorted(path.glob("*.safetensors"))
    if len(singles) == 1:
        return singles
    raise CheckpointError(
        f"{path}: no *.safetensors.index.json found (found {len(singles)} .safetensors files); "
        "pass the Wan2.1 model directory or the checkpoint file itself"
    )


def _shards_from_index(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{index}: not a valid shard index ({e})") from e
    shards = sorted(set(weight_map.values()))
    missing = [s for s in shards if not (index.parent / s).is_file()]
    if missing:
        raise CheckpointError(
            f"{index}: shard file(s) missing: {', '.join(missing)} (re-download the model directory)"
        )
    files = [index.parent / s for s in shards]
    # Every key the index promises must be in the shard it names.
    for file in files:
        have = set(_safetensors_entries(file))
        want = {k for k, s in weight_map.items() if s == file.name}
        lost = sorted(want - have)
        if lost:
            raise CheckpointError(
                f"{file}: keys listed in {index.name} are absent: {', '.join(lost[:10])}"
                + (" ..." if len(lost) > 10 else "")
                + " (the shard is incomplete or from another release)"
            )
    return files


def _safetensors_entries(file: Path) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            out = {}
            for key in f.keys():
                sl = f.get_slice(key)
                out[key] = (tuple(sl.get_shape()), _st_dtype(sl.get_dtype(), file, key))
            return out
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{file}: not a readable safetensors file ({e})") from e


_ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}


def _st_dtype(name: str, file: Path, key: str) -> torch.dtype:
    try:
        return _ST_DTYPES[name]
    except KeyError:
        raise CheckpointError(f"{file}: tensor {key!r} has unsupported dtype {name}") from None


def _load_pth(file: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(str(file), map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{file}: refused to load: the pickle is not a plain tensor dict (it references "
            f"code or objects that weights_only loading forbids). Re-save it as a plain "
            f"state dict or as .safetensors. Detail: {str(e).splitlines()[0]}"
        ) from None
    except (RuntimeError, OSError, EOFError) as e:
        raise CheckpointError(f"{file}: not a readable torch checkpoint ({e})") from e
    for wrapper in WRAPPER_KEYS:
        if isinstance(obj, dict) and set(obj) == {wrapper} and isinstance(obj[wrapper], dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{file}: expected a dict of tensors, found {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{file}: entries that are not tensors: {', '.join(map(str, bad[:10]))}")
    return obj


def _common_prefix(keys: Iterable[str]) -> str:
    keys = list(keys)
    for prefix in KNOWN_PREFIXES:
        if keys and all(k.startswith(prefix) for k in keys):
            return prefix
    return ""


# -- assignment ----------------------------------------------------------------------
def check_compatible(module: nn.Module, index: CheckpointIndex) -> None:
    """Raise one CheckpointError listing every missing, unexpected or mis-shaped key."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict(keep_vars=True).items()}
    problems = []
    for key in sorted(set(expected) - set(index.keys())):
        problems.append(f"missing: {key} (expected shape {list(expected[key])}) is in none of the files")
    for key in sorted(set(index.keys()) - set(expected)):
        problems.append(f"unexpected: {key} from {index.sources[key].file} is not a parameter of this model")
    for key in sorted(set(expected) & set(index.keys())):
        shape, dtype = index.meta(key)
        if shape != expected[key]:
            problems.append(
                f"shape: {key} from {index.sources[key].file} is {list(shape)}, model expects {list(expected[key])}"
            )
        if not (dtype.is_floating_point):
            problems.append(f"dtype: {key} from {index.sources[key].file} is {dtype}, expected a floating-point tensor")
    if problems:
        files = ", ".join(str(f) for f in index.files())
        head = f"checkpoint does not fit {type(module).__name__} ({len(problems)} problem(s); files: {files}):"
        shown = problems[:50]
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        raise CheckpointError(head + "\n  " + "\n  ".join(shown) + more)


def assign_weights(
    module: nn.Module,
    index: CheckpointIndex,
    *,
    dtype: torch.dtype,
    device: Union[str, torch.device] = "cpu",
) -> nn.Module:
    """Assign every parameter of a meta-device `module` from `index`, strictly.

    Tensors are converted one at a time, so at most one extra tensor is alive beside the
    growing model. Parameters named in the module's `keep_fp32` tuple (exact names or
    suffixes) are kept in float32 whatever `dtype` is.
    """
    check_compatible(module, index)
    keep_fp32 = tuple(getattr(module, "keep_fp32", ()))
    require_room_for_weights(module, dtype, device, f"the weights of {type(module).__name__}", keep_fp32)
    names = dict(module.named_parameters())
    buffers = dict(module.named_buffers())
    for key in index.keys():
        target = torch.float32 if keep_fp32 and key.endswith(keep_fp32) else dtype
        tensor = index.get(key).to(device=device, dtype=target)
        owner_name, _, leaf = key.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        if key in names:
            setattr(owner, leaf, nn.Parameter(tensor, requires_grad=False))
        elif key in buffers:
            owner._buffers[leaf] = tensor
    left = [n for n, t in list(module.named_parameters()) + list(module.named_buffers()) if t.is_meta]
    if left:
        raise CheckpointError(f"weights not initialized from checkpoint: {', '.join(left)}")
    return module.eval()
