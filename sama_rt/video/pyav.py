"""PyAV (FFmpeg bindings), imported the first time a video file is read or written.

Editing frames that are already in memory (`Editor.edit(frames)`, benchmarks, the GPU
checks) needs no FFmpeg; an application that never touches a file should not fail to
import the editor because PyAV is missing from its environment.
"""
from __future__ import annotations

import importlib

INSTALL_HINT = "reading or writing video files needs PyAV: pip install 'av>=18'"


class _PyAV:
    """Stands in for the `av` module; the first attribute access imports it."""

    def __init__(self):
        self._module = None

    def __getattr__(self, name: str):
        if self._module is None:
            try:
                self._module = importlib.import_module("av")
            except ImportError as error:
                raise ImportError(f"{INSTALL_HINT} ({error})") from error
        return getattr(self._module, name)


av = _PyAV()
