"""sama-rt: the fast, production-grade runtime for the SAMA-14B video editor."""
__version__ = "0.1.0"

from .editor import EditResult, Editor  # noqa: E402
from .params import EditParams  # noqa: E402

__all__ = ["Editor", "EditParams", "EditResult", "__version__"]
