"""Error of the fp8 / int8 Q/DQ DiT graphs against the unquantized model, on CPU with onnxruntime.

For each DiT config: export an fp32 graph, calibrate activation amax on the inputs a short
denoising run feeds the DiT (calibration seed), quantize (engines.quantize), then on a
different seed compare
- one noise_pred (cosine similarity, relative L2),
- a short denoising loop (CFG 5): cosine and PSNR of the final latents (no VAE decode:
  PSNR over the latents' own range, max - min of the reference).
The unquantized reference is the fp32 ONNX graph (equal to torch within 3e-6).

Random weights are not real activation statistics: real checkpoints have outlier channels
that make int8 without SmoothQuant much worse than here, and fp8 errors differ too.

    python benchmarks/quantization_error.py [--configs tiny,medium] [--steps 4] [--json]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import onnx
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sama_rt.engines.backends import OnnxRuntimeDiT, dit_graph_inputs  # noqa: E402
from sama_rt.engines.calibration import CALIBRATION_INPUTS, CalibrationRecorder  # noqa: E402
from sama_rt.engines.config import QuantConfig  # noqa: E402
from sama_rt.engines.quantize import collect_amax, find_linear_sites, quantize_model  # noqa: E402
from sama_rt.models import DiTConfig, build_dit  # noqa: E402
from sama_rt.sampling import denoise  # noqa: E402
from tests.engines.dit_graph import export_dit_graph  # noqa: E402

SHAPES = {"tiny": (1, 16, 3, 4, 6), "medium": (1, 16, 4, 8, 8)}
VARIANTS = {
    "fp8": QuantConfig.default("fp8"),
    "int8 (SmoothQuant 0.5)": QuantConfig.default("int8"),
    "int8 (no smoothing)": QuantConfig("int8"),
}


def edit_inputs(cfg: DiTConfig, shape, seed: int):
    g = torch.Generator().manual_seed(seed)
    b = shape[0]
    context = torch.randn(b, 512, cfg.text_dim, generator=g)
    context[:, 20:] = 0
    negative = torch.randn(b, 512, cfg.text_dim, generator=g)
    negative[:, 4:] = 0
    return dict(
        noise=torch.randn(shape, generator=g),
        semantic_noise=torch.randn(b, 65, cfg.siglip_dim, generator=g),
        source_latents=torch.randn(shape, generator=g),
        context=context,
        negative_context=negative,
    )


def cosine(a, b) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    return float(a @ b / (a.norm() * b.norm()))


def psnr(ref, x) -> float:
    rmse = float((ref - x).double().pow(2).mean().sqrt())
    return math.inf if rmse == 0 else 20 * math.log10(float(ref.max() - ref.min()) / rmse)


def run_config(name: str, steps: int, workdir: Path) -> list[dict]:
    cfg = DiTConfig.preset(name)
    shape = SHAPES[name]
    model = build_dit(cfg, seed=0)
    t0 = time.time()
    fp32_path = export_dit_graph(model, workdir / f"{name}_dit.onnx")
    print(f"[{name}] exported in {time.time() - t0:.1f}s", file=sys.stderr)
    fp32 = OnnxRuntimeDiT(fp32_path, cfg)

    # Calibration: the DiT inputs of a short edit on the calibration seed.
    recorder = CalibrationRecorder(model)
    denoise(recorder, num_steps=steps, cfg_scale=5.0, **edit_inputs(cfg, shape, seed=100))
    feeds = [
        {k: v.numpy() for k, v in dit_graph_inputs(cfg, *(sample[k] for k in CALIBRATION_INPUTS)).items()}
        for sample in recorder.calibration
    ]
    graph = onnx.load(str(fp32_path))

    evaluation = edit_inputs(cfg, shape, seed=1)
    timestep = torch.tensor([937.5])
    single_args = (evaluation["noise"], timestep, evaluation["context"], evaluation["source_latents"],
                   evaluation["semantic_noise"])
    ref_single, _ = fp32(*single_args)
    ref_loop, _ = denoise(fp32, num_steps=steps, cfg_scale=5.0, **evaluation)

    rows = []
    for label, quant in VARIANTS.items():
        sites = find_linear_sites(graph, quant)
        amax = collect_amax(graph, [s.activation for s in sites], feeds)
        qpath = workdir / f"{name}_dit_{quant.precision.value}_{len(rows)}.onnx"
        onnx.save(quantize_model(graph, quant, amax), str(qpath))
        q = OnnxRuntimeDiT(qpath, cfg)
        single, _ = q(*single_args)
        loop, _ = denoise(q, num_steps=steps, cfg_scale=5.0, **evaluation)
        rows.append({
            "config": name, "variant": label, "linears": len(sites), "calibration_samples": len(feeds),
            "noise_pred_cosine": cosine(ref_single, single),
            "noise_pred_rel_l2": float((single - ref_single).norm() / ref_single.norm()),
            f"loop{steps}_cosine": cosine(ref_loop, loop),
            f"loop{steps}_latent_psnr_db": psnr(ref_loop, loop),
        })
        print(f"[{name}] {label}: {rows[-1]}", file=sys.stderr)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="tiny,medium")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs.split(","):
            rows += run_config(name.strip(), args.steps, Path(tmp))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    loop_c, loop_p = f"loop{args.steps}_cosine", f"loop{args.steps}_latent_psnr_db"
    print(f"| config | variant | Linears | noise_pred cosine | noise_pred rel. L2 | {args.steps}-step loop cosine | loop latent PSNR (dB) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['config']} | {r['variant']} | {r['linears']} | {r['noise_pred_cosine']:.5f} | "
              f"{r['noise_pred_rel_l2']:.4f} | {r[loop_c]:.5f} | {r[loop_p]:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
