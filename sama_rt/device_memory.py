"""Free memory on a device, so that work which cannot fit is refused before it allocates.

Without this, building the 14B model where it does not fit ends in the kernel's OOM killer
(host memory: no message at all) or in a CUDA out-of-memory error minutes into the build.
"""
from __future__ import annotations

from typing import Optional

import torch

_MEMINFO = "/proc/meminfo"


def available_bytes(device) -> Optional[int]:
    """Bytes that can be allocated on `device` now, or None where it cannot be told."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            with open(_MEMINFO) as meminfo:
                for line in meminfo:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024  # the file counts kB
        except (OSError, ValueError, IndexError):
            return None
    return None


def require_free(nbytes: int, device, what: str, hint: str = "") -> None:
    """Raise MemoryError, saying what, how much and `hint`, when `nbytes` exceed the free memory."""
    free = available_bytes(device)
    if free is not None and nbytes > free:
        raise MemoryError(
            f"{what} need {nbytes / 2**30:.1f} GiB on {torch.device(device)}, but only "
            f"{free / 2**30:.1f} GiB is free. {hint}".strip()
        )


def require_room_for_weights(module, dtype: torch.dtype, device, what: str, keep_fp32: tuple = ()) -> None:
    """require_free for the parameters of a (meta-device) module about to be materialised in
    `dtype` on `device`; parameters whose names end with one of `keep_fp32` stay float32."""
    count = nbytes = 0
    for name, p in module.named_parameters():
        count += p.numel()
        nbytes += p.numel() * (4 if keep_fp32 and name.endswith(keep_fp32) else dtype.itemsize)
    remedies = ["a smaller config", "a device with more memory"] + (["bfloat16 weights"] if dtype == torch.float32 else [])
    hint = f"Use {', '.join(remedies[:-1])} or {remedies[-1]}."
    if torch.device(device).type == "cuda":
        hint += " For the DiT, --offload blocks keeps its blocks in host memory."
    require_free(nbytes, device, f"{what} ({count / 1e9:.2f}B parameters in {dtype})", hint)
