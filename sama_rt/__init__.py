"""sama-rt: the fast, production-grade runtime for the SAMA-14B video editor."""
__version__ = "0.1.0"

__all__ = ["Editor", "EditParams", "EditResult", "__version__"]


def __getattr__(name):
    # Lazy, so that `python -m sama_rt bench` and the model/kernel modules import without
    # the video stack (PyAV) on machines that only run the DiT.
    if name in ("Editor", "EditResult"):
        from . import editor

        return getattr(editor, name)
    if name == "EditParams":
        from .params import EditParams

        return EditParams
    raise AttributeError(f"module 'sama_rt' has no attribute {name!r}")
