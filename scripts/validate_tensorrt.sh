#!/usr/bin/env bash
# Build the tiny DiT engines at each precision with TensorRT, run them, compare with torch, print a table.
# Needs: an NVIDIA GPU, TensorRT >= 10.8 (pip install 'sama-rt[tensorrt]'), the repo installed (pip install -e .).
# Usage: scripts/validate_tensorrt.sh [WORKDIR]
set -euo pipefail
WORK="${1:-$(mktemp -d)}"
mkdir -p "$WORK"
export SAMA_RT_VALIDATE_DIR="$WORK"
cd "$(dirname "$0")/.."

python - <<'PY'
import logging, os, sys, time
from pathlib import Path

import onnx, torch

from sama_rt.engines.tensorrt_adapter import tensorrt_status
ok, why = tensorrt_status()
if not ok:
    sys.exit(f"validate_tensorrt: {why}")

from sama_rt.engines.backends import TensorRTDiT, dit_graph_inputs
from sama_rt.engines.calibration import CALIBRATION_INPUTS, CalibrationRecorder
from sama_rt.engines.config import BuildConfig
from sama_rt.engines.plan import make_build_plan
from sama_rt.engines.quantize import collect_amax, find_linear_sites, quantize_model
from sama_rt.engines.tensorrt_adapter import (
    EngineRunner, SharedWorkspace, build_engine, gpu_compute_capability, tensorrt_version,
)
from sama_rt.export.spec import AxisRange, dit_spec
from sama_rt.models import DiTConfig, build_dit
from sama_rt.sampling import denoise
from tests.engines.dit_graph import export_dit_graph

logging.basicConfig(level=logging.WARNING)
work = Path(os.environ["SAMA_RT_VALIDATE_DIR"])
model = build_dit(DiTConfig.preset("tiny"), seed=0)
graph_path = export_dit_graph(model, work / "dit.onnx")
ranges = {"batch": (1, 2, 2), "grid_frames": (2, 3, 4), "grid_height": (2, 2, 4), "grid_width": (3, 3, 4)}
spec = dit_spec(model.config).to_dict({k: AxisRange(*v) for k, v in ranges.items()})

g = torch.Generator().manual_seed(1)
shape = (1, 16, 3, 4, 6)
ctx = torch.randn(1, 512, 64, generator=g)
loop = dict(noise=torch.randn(shape, generator=g), semantic_noise=torch.randn(1, 65, 1152, generator=g),
            source_latents=torch.randn(shape, generator=g), context=ctx, negative_context=torch.zeros_like(ctx),
            num_steps=4, cfg_scale=5.0)
recorder = CalibrationRecorder(model)
with torch.no_grad():
    ref, _ = denoise(recorder, **loop)
feeds = [{k: v.numpy() for k, v in dit_graph_inputs(model.config, *(s[k] for k in CALIBRATION_INPUTS)).items()}
         for s in recorder.calibration]

trt_version, cc = tensorrt_version(), gpu_compute_capability()
rows = []
for precision in ("fp16", "bf16", "fp8", "int8"):
    cfg = BuildConfig(precision=precision, weight_stripped=False)
    if cc < cfg.precision.min_compute_capability:
        rows.append((precision, "skipped: GPU too old", "", "", ""))
        continue
    path = graph_path
    if cfg.precision.quantized:
        model_proto = onnx.load(str(graph_path))
        sites = find_linear_sites(model_proto, cfg.quant)
        q = quantize_model(model_proto, cfg.quant, collect_amax(model_proto, [s.activation for s in sites], feeds))
        path = work / f"dit.{precision}.onnx"
        onnx.save(q, str(path))
    manifest = {"submodels": {"dit": dict(spec, onnx=str(path), graph_sha256=precision, weights_sha256="w")}}
    plan = make_build_plan(manifest, cfg, trt_version, cc).engine("dit")
    t0 = time.time()
    try:
        blob = build_engine(plan, path)
    except Exception as e:  # report and continue with the other precisions
        rows.append((precision, f"build failed: {e}".splitlines()[0][:60], "", "", ""))
        continue
    build_s = time.time() - t0
    runner = EngineRunner(blob, SharedWorkspace(), torch.cuda.Stream())
    dit = TensorRTDiT(runner, model.config, timestep_dtype=torch.float32)
    out, _ = denoise(dit, **{k: (v.cuda() if torch.is_tensor(v) else v) for k, v in loop.items()})
    out = out.cpu()
    cos = float(torch.nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0))
    rmse = float((out - ref).pow(2).mean().sqrt())
    psnr = 20 * torch.log10((ref.max() - ref.min()) / rmse).item() if rmse else float("inf")
    rows.append((precision, f"{build_s:.1f}s, {len(blob) / 1e6:.1f} MB", f"{cos:.5f}", f"{psnr:.1f}",
                 "yes" if plan.plugins else "no"))

print(f"\nTensorRT {trt_version}, GPU {torch.cuda.get_device_name()} (sm_{cc[0]}{cc[1]}); tiny DiT, 4-step CFG loop vs torch fp32")
print("| precision | build | loop cosine | latent PSNR (dB) | plugin planned |")
print("| --- | --- | --- | --- | --- |")
for r in rows:
    print("| " + " | ".join(r) + " |")
PY
