"""What can run here: versions, devices, and each backend's availability with the reason."""
from __future__ import annotations

import importlib
import platform


def _version(module: str):
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - any import failure means "not usable here"
        return None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".strip()
    return getattr(mod, "__version__", "unknown"), None


def collect_info() -> dict:
    import torch

    from . import __version__
    from .models.attention import triton_available

    info = {"sama_rt": __version__, "python": platform.python_version(), "torch": torch.__version__}
    cuda = torch.cuda.is_available()
    info["cuda"] = {
        "available": cuda,
        "torch_cuda": torch.version.cuda,
        "devices": [
            {"name": torch.cuda.get_device_name(i),
             "capability": ".".join(map(str, torch.cuda.get_device_capability(i))),
             "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)}
            for i in range(torch.cuda.device_count())
        ] if cuda else [],
    }
    packages = {}
    for name in ("triton", "onnx", "onnxruntime", "tensorrt", "av", "safetensors", "sentencepiece"):
        version, error = _version(name)
        packages[name] = {"version": version, "error": error}
    info["packages"] = packages

    ort_providers = []
    if packages["onnxruntime"]["version"]:
        import onnxruntime

        ort_providers = onnxruntime.get_available_providers()
    triton_ok, triton_why = triton_available()
    fp8_ok, fp8_why = _fp8_support(cuda)
    hopper_ok, hopper_why = _hopper_support(cuda)
    trt_ok = packages["tensorrt"]["version"] is not None and cuda
    info["backends"] = {
        "torch": {"available": True, "why": f"torch on {'CUDA and CPU' if cuda else 'CPU'}"},
        "onnxruntime": {
            "available": bool(ort_providers),
            "why": f"providers: {', '.join(ort_providers)}" if ort_providers
            else "onnxruntime is not installed (pip install 'sama-rt[export]')",
        },
        "tensorrt": {
            "available": trt_ok,
            "why": "TensorRT and a CUDA GPU found" if trt_ok else (
                "no CUDA GPU" if packages["tensorrt"]["version"] else
                "TensorRT is not installed (pip install 'sama-rt[tensorrt]' on a machine with an NVIDIA GPU "
                "that can reach NVIDIA's package index)"),
        },
    }
    # Gluon has no interpreter: compiled, on a Hopper GPU, or not at all.
    gluon = {"available": triton_ok and cuda and hopper_ok,
             "why": hopper_why if triton_ok and cuda else "Gluon kernels run only compiled, on a Hopper GPU"}
    info["attention"] = {
        "reference": {"available": True, "why": "plain torch, float32"},
        "sdpa": {"available": True, "why": "torch scaled_dot_product_attention (what auto picks off Hopper)"},
        "triton": {"available": triton_ok, "why": triton_why},
        "triton-in-loop": {"available": triton_ok, "why": triton_why},
        # Without CUDA, Triton is available only as the CPU interpreter, which runs fp8 too.
        "triton-fp8": {"available": triton_ok and (fp8_ok or not cuda),
                       "why": fp8_why if triton_ok and cuda else triton_why},
        "triton-copies": {"available": triton_ok and (hopper_ok or not cuda),
                          "why": hopper_why if triton_ok and cuda else triton_why},
        "triton-fp8-copies": {"available": triton_ok and (hopper_ok or not cuda),
                              "why": hopper_why if triton_ok and cuda else triton_why},
        "triton-gluon": gluon,
        "triton-gluon-ws": dict(gluon, why=gluon["why"] + " (what auto picks on Hopper)"),
        "triton-gluon-ws-fp8": gluon,
    }
    info["runtime"] = {
        "offload": {"available": True, "why": "DiT blocks and the text encoder kept in host memory"},
        "fp8_linear": {"available": True, "why": fp8_why if cuda else "torch._scaled_mm on CPU (emulated: "
                       "for error checks, not speed)"},
        "compile": {"available": cuda, "why": "torch.compile on CUDA" if cuda else "CUDA only"},
        "cuda_graphs": {"available": cuda, "why": "CUDA graphs per shape" if cuda else "CUDA only"},
    }
    return info


def _capability_support(cuda: bool, minimum: tuple[int, int], what: str) -> tuple[bool, str]:
    """Whether the first GPU has compute capability `minimum` or newer, for `what`."""
    import torch

    if not cuda:
        return False, "no CUDA GPU"
    capability = torch.cuda.get_device_capability(0)
    have = f"{capability[0]}.{capability[1]}"
    if capability < minimum:
        return False, f"{what}: needs compute capability {minimum[0]}.{minimum[1]}+ (this GPU: {have})"
    return True, f"{what} (compute capability {have})"


def _fp8_support(cuda: bool) -> tuple[bool, str]:
    """float8 e4m3 tensor cores (8.9+)."""
    return _capability_support(cuda, (8, 9), "float8 e4m3 tensor cores")


def _hopper_support(cuda: bool) -> tuple[bool, str]:
    """Tensor-memory-accelerator loads (9.0+), which the rotated-copies attention kernel
    reads all its tiles with."""
    return _capability_support(cuda, (9, 0), "the rotated-copies kernel's TMA loads")


def format_info(info: dict) -> str:
    lines = [f"sama-rt {info['sama_rt']}  python {info['python']}  torch {info['torch']}"]
    cuda = info["cuda"]
    if cuda["available"]:
        for i, d in enumerate(cuda["devices"]):
            lines.append(f"cuda:{i}  {d['name']}  sm_{d['capability'].replace('.', '')}  {d['memory_gib']} GiB")
    else:
        lines.append("cuda: not available (CPU only)")
    lines.append("packages:")
    for name, p in info["packages"].items():
        lines.append(f"  {name:<14} {p['version'] or 'missing  (' + (p['error'] or '') + ')'}")
    width = max(len(name) for group in ("backends", "attention", "runtime") for name in info[group])
    for group in ("backends", "attention", "runtime"):
        lines.append(f"{group}:")
        for name, b in info[group].items():
            mark = "yes" if b["available"] else "no "
            lines.append(f"  {name:<{width}} {mark}  {b['why']}")
    return "\n".join(lines)
