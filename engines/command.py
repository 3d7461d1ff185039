"""`sama-rt build-engines`: exported ONNX graphs -> TensorRT engines (+ Q/DQ quantization for fp8/int8).

    sama-rt build-engines --onnx-dir DIR --out ENGINES --precision fp8 \\
        --calibration calib.safetensors [--frames 49,81 --resolution 480x832]

Engines whose artifact already matches the freshly planned cache key are kept.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shlex
from pathlib import Path

from .config import GIB, BuildConfig, DimRange, Precision

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--onnx-dir", type=Path, help="directory written by `sama-rt export` (manifest.json)")
    parser.add_argument("--wan-dir", type=Path, help="instead of --onnx-dir: export from the weights first (into OUT/onnx)")
    parser.add_argument("--sama-checkpoint", type=Path, help="with --wan-dir: the SAMA .safetensors")
    parser.add_argument("--out", required=True, type=Path, help="engine directory (<name>.plan + <name>.json)")
    parser.add_argument("--precision", default="bf16", choices=[p.value for p in Precision])
    parser.add_argument("--calibration", type=Path, help="calibration set (.safetensors) for fp8/int8")
    parser.add_argument("--frames", default=None, help="frame counts to serve, e.g. 49,81 (default: the export's)")
    parser.add_argument("--resolution", default=None, help="HEIGHTxWIDTH[,HxW...] to serve (default: the export's)")
    parser.add_argument("--submodels", default=None, help="comma-separated subset of the exported graphs")
    parser.add_argument("--timing-cache", type=Path, default=None, help="TensorRT timing cache file (speeds up rebuilds)")
    parser.add_argument("--workspace-gb", type=float, default=8.0)
    parser.add_argument("--opt-level", type=int, default=3, help="TensorRT builder optimization level 0-5")
    parser.add_argument("--no-strip", action="store_true", help="keep weights in the engines (no refit at load time)")
    parser.add_argument("--smoothquant-alpha", type=float, default=None, help="int8 SmoothQuant alpha (default 0.5)")


def build_config_from_args(args, manifest: dict) -> BuildConfig:
    from .config import QuantConfig

    precision = Precision.parse(args.precision)
    quant = None
    if precision.quantized:
        quant = QuantConfig.default(precision)
        if args.smoothquant_alpha is not None:
            quant = QuantConfig(precision, smoothquant_alpha=args.smoothquant_alpha)
    return BuildConfig(
        precision=precision,
        dims=shape_overrides(args.frames, args.resolution, manifest),
        workspace_bytes=int(args.workspace_gb * GIB),
        builder_optimization_level=args.opt_level,
        weight_stripped=not args.no_strip,
        timing_cache=str(args.timing_cache) if args.timing_cache else None,
        quant=quant,
        submodels=tuple(s for s in (args.submodels or "").split(",") if s),
    )


def shape_overrides(frames, resolution, manifest: dict) -> dict[str, DimRange]:
    """Axis ranges for the requested frame counts / resolutions (export.spec's buckets)."""
    if frames is None and resolution is None:
        return {}
    from ..export.spec import ShapeBuckets, text_ranges

    buckets = ShapeBuckets.parse(frames or "49,81", resolution or "480x832")
    patch = tuple((manifest.get("config", {}).get("dit", {}) or {}).get("patch_size", (1, 2, 2)))
    pf, ph, pw = patch
    lat_frames = buckets.latent_frames()
    sizes = buckets.latent_sizes()

    def rng(values, opt):
        return DimRange(min(values), opt, max(values))

    ranges = {
        "grid_frames": rng([f // pf for f in lat_frames], max(lat_frames) // pf),
        "grid_height": rng([h // ph for h, _ in sizes], sizes[0][0] // ph),
        "grid_width": rng([w // pw for _, w in sizes], sizes[0][1] // pw),
        "latent_height": rng([h for h, _ in sizes], sizes[0][0]),
        "latent_width": rng([w for _, w in sizes], sizes[0][1]),
    }
    ranges.update({k: DimRange(v.min, v.opt, v.max) for k, v in text_ranges(buckets).items()})
    return ranges


def rebuild_command(args) -> str:
    parts = ["sama-rt", "build-engines", "--onnx-dir", str(args.onnx_dir), "--out", str(args.out),
             "--precision", args.precision]
    for flag, value in (("--calibration", args.calibration), ("--frames", args.frames),
                        ("--resolution", args.resolution), ("--submodels", args.submodels)):
        if value:
            parts += [flag, str(value)]
    if args.no_strip:
        parts.append("--no-strip")
    return " ".join(shlex.quote(p) for p in parts)


def _sha256(path: Path) -> str:
    from .artifact import sha256_files

    return sha256_files([path])


def prepare_manifest(onnx_dir: Path) -> dict:
    """manifest.json with each graph's file hash filled in (the architecture part of the key)."""
    from .plan import parse_manifest

    path = onnx_dir / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: export the model first (`sama-rt export ... --out {onnx_dir}`)")
    manifest = json.loads(path.read_text())
    for name, sub in parse_manifest(manifest).items():
        if not sub.graph_sha256:
            entry = _entry(manifest, name)
            entry["graph_sha256"] = _sha256(onnx_dir / sub.onnx)
    return manifest


def _entry(manifest: dict, name: str) -> dict:
    raw = next(manifest[k] for k in ("submodels", "models", "graphs") if k in manifest)
    if isinstance(raw, dict):
        return raw[name]
    return next(e for e in raw if e["name"] == name)


def quantize_dit_graph(onnx_dir: Path, out_dir: Path, manifest: dict, cfg: BuildConfig, calibration: Path) -> None:
    """Write the Q/DQ DiT graph into out_dir and point the manifest's dit entry at it."""
    import onnx

    from ..models.dit import DiTConfig
    from .backends import dit_graph_inputs
    from .calibration import CALIBRATION_INPUTS, load_calibration_set
    from .plan import parse_manifest
    from .quantize import collect_amax, find_linear_sites, quantize_model

    sub = parse_manifest(manifest)["dit"]
    model = onnx.load(str(onnx_dir / sub.onnx))
    calib = load_calibration_set(calibration)
    dit_cfg = DiTConfig.from_dict(calib.config or manifest["config"]["dit"])
    feeds = [{k: v.numpy() for k, v in dit_graph_inputs(dit_cfg, *(s[k] for k in CALIBRATION_INPUTS)).items()}
             for s in calib]
    sites = find_linear_sites(model, cfg.quant)
    logger.info("calibrating %d Linear inputs on %d samples", len(sites), len(feeds))
    quantized = quantize_model(model, cfg.quant, collect_amax(model, [s.activation for s in sites], feeds))
    name = f"dit.{cfg.precision.value}.onnx"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / (name + ".data")).unlink(missing_ok=True)
    onnx.save(quantized, str(out_dir / name), save_as_external_data=True, location=name + ".data")
    entry = _entry(manifest, "dit")
    entry["onnx"] = str((out_dir / name).resolve())
    # The calibration data defines the scales: fold it into the weights part of the key.
    digest = hashlib.sha256((sub.weights_sha256 + _sha256(calibration)).encode()).hexdigest()
    entry["weights_sha256"] = digest


def run(args) -> int:
    from .tensorrt_adapter import tensorrt_status

    ok, why = tensorrt_status()
    if not ok:
        logger.error("cannot build TensorRT engines here: %s", why)
        return 2
    from .artifact import StaleEngineError, load_artifact, write_artifact
    from .plan import make_build_plan
    from .tensorrt_adapter import build_engine, gpu_compute_capability, tensorrt_version

    if args.onnx_dir is None:
        if args.wan_dir is None or args.sama_checkpoint is None:
            logger.error("give --onnx-dir (from `sama-rt export`), or --wan-dir and --sama-checkpoint to export first")
            return 2
        args.onnx_dir = export_from_weights(args.wan_dir, args.sama_checkpoint, args.out / "onnx",
                                            args.frames, args.resolution)
    manifest = prepare_manifest(args.onnx_dir)
    cfg = build_config_from_args(args, manifest)
    if cfg.precision.quantized and ("dit" in (cfg.submodels or ("dit",))):
        if args.calibration is None:
            logger.error("--precision %s needs --calibration FILE (DiT inputs saved by the Editor)", cfg.precision.value)
            return 2
        quantize_dit_graph(args.onnx_dir, args.out, manifest, cfg, args.calibration)
    trt_version, cc = tensorrt_version(), gpu_compute_capability()
    plugin_fp = _plugin_fingerprint()
    plan = make_build_plan(manifest, cfg, trt_version, cc, plugin_fingerprint=plugin_fp)
    command = rebuild_command(args)
    for i, engine in enumerate(plan.engines, 1):
        try:
            load_artifact(args.out, engine.name, trt_version, cc, engine.weights_sha256, expected_key=engine.cache_key)
            logger.info("[%d/%d] %s: up to date (key %s)", i, len(plan.engines), engine.name, engine.cache_key[:12])
            continue
        except (FileNotFoundError, StaleEngineError):
            pass
        logger.info("[%d/%d] building %s (%s)", i, len(plan.engines), engine.name, engine.precision.value)
        onnx_path = Path(engine.onnx) if Path(engine.onnx).is_absolute() else args.onnx_dir / engine.onnx

        def progress(phase, step, total, _name=engine.name):
            logger.info("  %s: %s %s", _name, phase, f"{step}/{total}" if total else step)

        blob = build_engine(engine, onnx_path, args.timing_cache, progress)
        write_artifact(args.out, engine, blob, command)
    return 0


def export_from_weights(wan_dir: Path, sama_checkpoint: Path, out: Path, frames, resolution) -> Path:
    """`sama-rt export` with its defaults (bf16, plugin attention) into `out`."""
    from ..export.dit import export_dit
    from ..export.manifest import write_manifest
    from ..export.options import ExportOptions
    from ..export.spec import ShapeBuckets
    from ..export.text import export_text_encoder
    from ..export.vae import export_vae

    options = ExportOptions(out_dir=out, buckets=ShapeBuckets.parse(frames or "49,81", resolution or "480x832"))
    out.mkdir(parents=True, exist_ok=True)
    records = [export_dit(options, [wan_dir, sama_checkpoint]),
               export_text_encoder(options, wan_dir / "models_t5_umt5-xxl-enc-bf16.pth"),
               *export_vae(options, wan_dir / "Wan2.1_VAE.pth")]
    for record in records:
        record.verify()
    write_manifest(options, records)
    return out


def _plugin_fingerprint() -> str:
    """Digest of the kernel sources the plugin compiles (a kernel change must rebuild engines)."""
    root = Path(__file__).resolve().parents[1] / "kernels"
    files = sorted(root.glob("*.py"))
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()
