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
