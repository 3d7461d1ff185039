"""sama-rt: the fast, production-grade runtime for the SAMA-14B video editor."""
__version__ = "0.1.0"
