"""`sama-rt export`: checkpoints in, ONNX graphs + manifest.json out.

    sama-rt export --wan-dir Wan2.1-T2V-14B --sama-checkpoint SAMA-14B.safetensors --out onnx/
    sama-rt export --random-weights --config tiny --dtype fp32 --out /tmp/tiny-onnx
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ..models.checkpoint import CheckpointError
from .options import ATTENTION_MODES, BF16_MIN_OPSET, DEFAULT_OPSET, DTYPES, ExportOptions
from .spec import ShapeBuckets

logger = logging.getLogger(__name__)

MODELS = ("dit", "text", "vae")
# File names inside a Wan2.1-T2V-14B directory.
WAN_T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
WAN_VAE_FILE = "Wan2.1_VAE.pth"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_argument_group("weights")
    src.add_argument("--wan-dir", type=Path, help="Wan2.1-T2V-14B directory (DiT shards, umT5 .pth, VAE .pth)")
    src.add_argument("--sama-checkpoint", type=Path, help="SAMA .safetensors loaded over the Wan2.1 DiT")
    src.add_argument("--text-encoder", type=Path, help=f"umT5 state dict (default: WAN_DIR/{WAN_T5_FILE})")
    src.add_argument("--vae", type=Path, help=f"VAE state dict (default: WAN_DIR/{WAN_VAE_FILE})")
    src.add_argument("--random-weights", action="store_true",
                     help="export seeded random weights of --config (demos and CI; no files needed)")
    src.add_argument("--seed", type=int, default=0, help="seed for --random-weights")
    parser.add_argument("--out", type=Path, required=True, help="output directory (created; must not hold these graphs)")
    parser.add_argument("--config", choices=("tiny", "sama-14b"),
                        help="model size preset (default: inferred from the checkpoints; required for tiny checkpoints)")
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"comma-separated subset of {','.join(MODELS)} (default: all)")
    parser.add_argument("--frames", default="49,81", help="frame-count buckets, 4k+1 each (default 49,81)")
    parser.add_argument("--resolution", default="480x832",
                        help="HEIGHTxWIDTH buckets in pixels, comma-separated (default 480x832); "
                        "profiles span all of them, the first is the optimum")
    parser.add_argument("--opset", type=int, default=None,
                        help=f"ONNX opset, 18..22 (default {BF16_MIN_OPSET} for bf16, {DEFAULT_OPSET} otherwise)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="bf16",
                        help="weight/activation dtype of the graphs (default bf16, as released; "
                        "onnxruntime CPU runs fp32/fp16 only)")
    parser.add_argument("--attention", choices=ATTENTION_MODES, default="plugin",
                        help="plugin: one AnchorAttention node (+ reference function); plain: standard ops only")
    parser.add_argument("--json", action="store_true", help="print a machine-readable summary")


def run(args: argparse.Namespace) -> int:
    quiet_third_party_logs()
    try:
        options = ExportOptions(
            out_dir=args.out, dtype=args.dtype, opset=args.opset, attention=args.attention,
            buckets=ShapeBuckets.parse(args.frames, args.resolution),
        )
        models = _parse_models(args.models)
        sources = _sources(args, models)
    except ValueError as e:
        logger.error("%s", e)
        return 2
    try:
        import onnx  # noqa: F401
    except ImportError:
        logger.error("sama-rt export needs the [export] extra: pip install 'sama-rt[export]'")
        return 2
    from .graph import ExportError

    try:
        records = _export(options, models, sources, args)
    except (CheckpointError, ExportError, ValueError, FileNotFoundError) as e:
        logger.error("export failed: %s", e)
        return 2
    from .manifest import write_manifest

    manifest = write_manifest(options, records)
    failed = [r for r in records if not r.lint.ok]
    for r in records:
        logger.info("%s (%.2f GB weights, %.1f s)", r.lint.summary(), r.graph.weights_bytes / 1e9, r.graph.export_seconds)
        for err in r.lint.errors[:20]:
            logger.error("  %s: %s", r.spec.name, err)
    if args.json:
        print(json.dumps({
            "manifest": str(manifest),
            "graphs": {r.spec.name: {"onnx": str(r.graph.onnx_path), "lint_ok": r.lint.ok,
                                     "weights_bytes": r.graph.weights_bytes} for r in records},
        }, indent=2))
    else:
        print(f"wrote {len(records)} graph(s) and {manifest}", file=sys.stderr)
    return 1 if failed else 0


def _parse_models(text: str) -> list[str]:
    models = [m.strip() for m in text.split(",") if m.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if unknown or not models:
        raise ValueError(f"unknown model(s) {unknown}; valid: {', '.join(MODELS)}")
    return models


def _sources(args, models: list[str]) -> dict:
    """Checkpoint paths per model (None for random weights), checked to exist up front."""
    if args.random_weights:
        if args.config is None:
            raise ValueError("--random-weights needs --config")
        if args.wan_dir or args.sama_checkpoint or args.text_encoder or args.vae:
            raise ValueError("--random-weights exports no checkpoint; drop the weight paths")
        return {m: None for m in models}
    if args.wan_dir is None and ("dit" in models or not (args.text_encoder and args.vae)):
        raise ValueError("--wan-dir is required (or --random-weights)")
    sources = {}
    if "dit" in models:
        sources["dit"] = [args.wan_dir] + ([args.sama_checkpoint] if args.sama_checkpoint else [])
        if args.sama_checkpoint is None:
            logger.warning("no --sama-checkpoint: exporting the plain Wan2.1 DiT, which lacks SAMA's modules "
                           "unless the directory has them")
    if "text" in models:
        sources["text"] = args.text_encoder or args.wan_dir / WAN_T5_FILE
    if "vae" in models:
        sources["vae"] = args.vae or args.wan_dir / WAN_VAE_FILE
    for name, paths in sources.items():
        for p in paths if isinstance(paths, list) else [paths]:
            if not Path(p).exists():
                raise ValueError(f"{name}: {p} does not exist")
    return sources


def _export(options: ExportOptions, models: list[str], sources: dict, args) -> list:
    from .dit import export_dit
    from .text import export_text_encoder
    from .vae import export_vae

    records = []
    if "dit" in models:
        records.append(export_dit(options, sources["dit"], config=args.config, seed=args.seed))
    if "text" in models:
        records.append(export_text_encoder(options, sources["text"], config=args.config, seed=args.seed))
    if "vae" in models:
        records.extend(export_vae(options, sources["vae"], config=args.config, seed=args.seed))
    for record in records:
        record.verify()
    return records


def quiet_third_party_logs() -> None:
    """The ONNX toolchain logs every folded node at INFO; keep our own INFO readable."""
    for name in ("onnxscript", "onnx_ir", "torch.onnx", "torch.export", "torch._export"):
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv=None) -> int:
    """Standalone entry point (`python -m sama_rt.export.command`), same as `sama-rt export`."""
    parser = argparse.ArgumentParser(prog="sama-rt export", description=__doc__.split("\n")[0])
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
