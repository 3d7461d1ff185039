"""TensorRT build plans, engine artifacts, FP8/INT8 Q/DQ quantization and runtime backends.

config (Precision, QuantConfig, BuildConfig), plan (make_build_plan), artifact (engine
files), quantize (Q/DQ pass), calibration (calibration sets), backends (torch /
onnxruntime / tensorrt behind one call signature), tensorrt_adapter (the TensorRT calls),
command (`sama-rt build-engines`). Import the submodules directly; this package imports
nothing heavy on its own.
"""
from .config import BuildConfig, DimRange, Precision, QuantConfig

__all__ = ["BuildConfig", "DimRange", "Precision", "QuantConfig"]
