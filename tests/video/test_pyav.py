"""PyAV is imported on first use: without it, editing in-memory frames still works and a
file operation says what to install."""
import subprocess
import sys

import pytest

from sama_rt.video.pyav import INSTALL_HINT, _PyAV

WITHOUT_PYAV = """
import sys
sys.modules["av"] = None  # makes `import av` raise ImportError
from sama_rt.editor import Editor
from sama_rt.params import EditParams
from sama_rt.video.synth import synth_frames

editor = Editor.from_config("tiny", seed=0)
result = editor.edit(synth_frames(5, (64, 48)), "make the sky red", EditParams(steps=1, pixel_budget=64 * 48), fps=8)
assert result.frames.shape[0] == 5, result.frames.shape
try:
    result.save(sys.argv[1])
except ImportError as error:
    print(error)
else:
    raise SystemExit("saving without PyAV did not fail")
"""


def test_in_memory_edit_needs_no_pyav_and_saving_names_the_package(tmp_path):
    done = subprocess.run([sys.executable, "-c", WITHOUT_PYAV, str(tmp_path / "out.mp4")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert INSTALL_HINT in done.stdout
    assert not (tmp_path / "out.mp4").exists()


def test_first_use_imports_the_real_module():
    import av

    lazy = _PyAV()
    assert lazy.open is av.open and lazy.FFmpegError is av.FFmpegError


def test_missing_module_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(ImportError, match="pip install 'av>=18'"):
        _PyAV().open
