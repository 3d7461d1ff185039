"""`Editor`: video + instruction -> edited video.

Read `Editor.edit` top to bottom for the whole path: decode -> encode prompts -> for each
window (one, unless the clip is longer than `EditParams.window`): preprocess -> VAE-encode
source -> denoise -> VAE-decode -> postprocess -> stitch -> result. Each step is one call
into one module (`Editor.edit_windows` holds the per-window steps).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from itertools import count
from typing import Callable, Iterable, Iterator, Optional, Union

import numpy as np
import torch

from .acceleration.runtime import RuntimeOptions, prepare_dit, prepare_text_encoder, wrap_predictor
from .guided import GuidedPredictor
from .models.attention import select_attention_backend
from .parallel.config import ParallelConfig
from .params import EditParams
from .sampling import Pins, denoise, flow_match_sigmas, guided_velocity, initial_noise
from .timing import StageTimer
from .video.io import FALLBACK_FPS, AudioTrack, VideoError, probe_video, write_video
from .video.stream import FrameReader, VideoWriter
from .windows import iterate_windows, stitch, total_hint, window_seed
from .video.preprocess import (
    finish_frames,
    frames_to_tensor,
    prepare_frames,
    resolution_buckets,
    tensor_to_frames,
)

logger = logging.getLogger(__name__)

# (stage, done, total): "denoise" reports steps; other stages report 0/1 then 1/1.
ProgressCallback = Callable[[str, int, int], None]

# File names of the Wan2.1-T2V-14B release.
WAN_TEXT_ENCODER = "models_t5_umt5-xxl-enc-bf16.pth"
WAN_VAE = "Wan2.1_VAE.pth"
WAN_TOKENIZER = Path("google") / "umt5-xxl"
MAX_TEXT_TOKENS = 512

VideoInput = Union[str, Path, np.ndarray, torch.Tensor]


@dataclass(eq=False)
class EditResult:
    frames: np.ndarray  # uint8 [T, H, W, 3], T = the source frames edited
    fps: float
    timings: dict = field(default_factory=dict)
    source: Optional[Path] = None  # the input file, when the input was a file
    audio: Optional[AudioTrack] = None
    # False on the ranks of a multi-process edit other than rank 0: they hold the same
    # frames, and save() writes nothing there, so a script run by torchrun writes one file.
    writer: bool = True

    def save(self, path, *, overwrite: bool = False, crf: int = 25) -> Path:
        """Write H.264 at the source fps, keeping the source's audio; atomic.

        On a rank other than 0 of a parallel edit: writes nothing, returns `path`.
        """
        if not self.writer:
            return Path(path)
        timer = StageTimer()
        with timer.stage("encode"):
            out = write_video(
                path, self.frames, self.fps,
                audio_from=self.source if self.audio is not None else None,
                crf=crf, overwrite=overwrite,
                inputs=[self.source] if self.source is not None else (),
            )
        self.timings.update(timer.stages)
        return out


@dataclass(frozen=True)
class SavedEdit:
    """What `Editor.edit_to_file` wrote."""

    path: Path
    num_frames: int
    fps: float
    timings: dict


@dataclass(frozen=True, eq=False)
class EditedWindow:
    """One window's edited frames; the first `new_from` repeat the previous window's."""

    index: int
    frames: np.ndarray
    new_from: int

    @property
    def new_frames(self) -> np.ndarray:
        return self.frames[self.new_from:]


@dataclass(frozen=True)
class FrameSource:
    """Frames to edit, read lazily from a file or taken from an array."""

    frames: Iterable[np.ndarray]
    fps: float
    path: Optional[Path] = None
    audio: Optional[AudioTrack] = None
    num_frames: Optional[int] = None  # known or estimated, for progress only


def open_source(video: VideoInput, max_frames: Optional[int], fps: Optional[float]) -> FrameSource:
    if isinstance(video, (str, Path)):
        reader = FrameReader(video, max_frames=max_frames)
        estimate = probe_video(reader.path).num_frames
        if max_frames is not None:
            estimate = min(estimate, max_frames)
        return FrameSource(reader, fps or reader.fps, reader.path, reader.audio, estimate)
    frames = video.cpu().numpy() if isinstance(video, torch.Tensor) else np.asarray(video)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise VideoError(
            f"frames must be a non-empty uint8 array [T, H, W, 3], got {frames.dtype} {list(frames.shape)}"
        )
    if max_frames is not None:
        frames = frames[:max_frames]
    return FrameSource(list(frames), float(fps or FALLBACK_FPS), num_frames=len(frames))


def _window_progress(report: ProgressCallback, index: int, n_windows: Optional[int], steps: int) -> ProgressCallback:
    """Denoising progress over windows x steps."""
    total = (n_windows or index + 1) * steps

    def on_step(stage: str, done: int, _total: int) -> None:
        report(stage, index * steps + done, max(total, index * steps + done))

    return on_step


class Editor:
    """Holds the three models and runs edits. Build with `from_pretrained` or `from_config`."""

    def __init__(self, dit, text_encoder, tokenizer, vae, *, attention: str = "auto", fast: bool = True,
                 parallel: Optional[ParallelConfig] = None, backend: str = "torch", onnx_dir=None,
                 runtime: Optional[RuntimeOptions] = None):
        """dit / text_encoder / vae: the torch modules (the DiT also supplies the config).
        backend: "torch", "onnxruntime" (runs the graphs exported to `onnx_dir`) or "auto";
        TensorRT engines come through `from_engines`.
        parallel: split each edit across the processes of a torchrun launch (see
        docs/PARALLEL.md); every rank builds its Editor with the same config.
        runtime: how the torch backend runs the DiT; `from_pretrained` / `from_config` apply
        its model-level options (FP8 weights, compilation, streaming) before this is called,
        CUDA graphs are applied per edit."""
        from .engines.backends import Backend, probe_backends, select_backend

        self.backend = select_backend(backend, probe_backends(), have_engines=False, have_onnx=onnx_dir is not None)
        self.dit = dit
        self.dit_runner = dit  # what denoising calls: the module, or a graph / engine runner
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.vae = vae
        self.fast = fast
        self.runtime = runtime or RuntimeOptions()
        self.device = dit.device
        self.dit.with_attention(
            select_attention_backend(attention, self.device, dit.config.head_dim, dit.dtype)
        )
        if self.backend is Backend.ONNXRUNTIME:
            from .runners import onnxruntime_runners

            runners = onnxruntime_runners(onnx_dir, dit.config)
            self.dit_runner, self.text_encoder, self.vae = runners.dit, runners.text_encoder, runners.vae
            self.device = torch.device("cpu")
            if parallel is not None:
                raise ValueError("parallel editing runs on the torch backend only")
        if not self.runtime.is_default and self.backend is not Backend.TORCH:
            raise ValueError(f"runtime options ({self.runtime.describe()}) apply to the torch backend only, "
                             f"not {self.backend.value}")
        if parallel is not None and self.runtime.cuda_graphs:
            raise ValueError("CUDA graphs are not captured around parallel steps (their collectives); "
                             "drop cuda_graphs or parallel")
        self.parallel = None  # ParallelGroups of a multi-process edit
        if parallel is not None:
            from .parallel import setup_parallel

            self.parallel = setup_parallel(parallel, dit.config.num_heads, self.device)

    # -- construction ----------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        wan_dir,
        sama_checkpoint,
        device="cuda",
        dtype: torch.dtype = torch.bfloat16,
        *,
        tokenizer_dir=None,
        attention: str = "auto",
        parallel: Optional[ParallelConfig] = None,
        backend: str = "torch",
        onnx_dir=None,
        runtime: Optional[RuntimeOptions] = None,
    ) -> "Editor":
        """Load the layout users download: the Wan2.1-T2V-14B directory + the SAMA file.

        parallel: under torchrun, every rank loads the weights onto its own GPU (a bare
        "cuda" device means cuda:LOCAL_RANK) after the degrees are checked.
        runtime: RuntimeOptions(offload="blocks") is the low-memory mode, the DiT blocks stay
        in host memory and stream to the device one block ahead (same outputs); FP8 linear
        layers, torch.compile and CUDA graphs are the other options (sama_rt.acceleration).
        """
        from .models.dit import load_dit
        from .models.text_encoder import load_text_encoder
        from .models.tokenizer import PromptTokenizer
        from .models.vae import load_vae

        runtime = runtime or RuntimeOptions()
        runtime.check_device(device)
        wan_dir = Path(wan_dir)
        files = {
            "Wan2.1 directory": wan_dir,
            "SAMA checkpoint": Path(sama_checkpoint),
            "umT5 encoder": wan_dir / WAN_TEXT_ENCODER,
            "Wan VAE": wan_dir / WAN_VAE,
            "umT5 tokenizer": Path(tokenizer_dir) if tokenizer_dir else wan_dir / WAN_TOKENIZER,
        }
        missing = [f"{what}: {path}" for what, path in files.items() if not path.exists()]
        if missing:
            raise FileNotFoundError(
                "model files not found:\n  " + "\n  ".join(missing)
                + "\nDownload Wan-AI/Wan2.1-T2V-14B (the whole directory) and the SAMA-14B checkpoint."
            )
        if parallel is not None:
            from .models.checkpoint import CheckpointIndex
            from .models.dit import DiTConfig

            shapes = CheckpointIndex([wan_dir, files["SAMA checkpoint"]]).shapes()  # headers only
            device = _parallel_device(parallel, DiTConfig.from_state_dict(shapes).num_heads, device)
        # Check every file before loading the biggest one.
        tokenizer = PromptTokenizer.from_pretrained(files["umT5 tokenizer"])
        vae = load_vae(files["Wan VAE"], dtype=dtype, device=device)
        text_encoder = load_text_encoder(files["umT5 encoder"], dtype=dtype, device=runtime.load_device(device))
        text_encoder = prepare_text_encoder(text_encoder, device, runtime)
        dit = load_dit([wan_dir, files["SAMA checkpoint"]], dtype=dtype, device=runtime.load_device(device))
        prepare_dit(dit, device, runtime)
        return cls(dit, text_encoder, tokenizer, vae, attention=attention, parallel=parallel,
                   backend=backend, onnx_dir=onnx_dir, runtime=runtime)

    @classmethod
    def from_engines(
        cls, engine_dir, wan_dir, sama_checkpoint, *, device="cuda", dtype: torch.dtype = torch.bfloat16,
        tokenizer_dir=None,
    ) -> "Editor":
        """TensorRT engines from `sama-rt build-engines` run the DiT and the text encoder; the
        VAE runs in torch. Weight-stripped engines are refitted from the checkpoints, so the
        released files are still needed. Refused, saying what to install, where TensorRT or a
        GPU is missing."""
        from .engines.tensorrt_adapter import tensorrt_status

        ok, why = tensorrt_status()
        if not ok:
            raise RuntimeError(f"the TensorRT backend cannot run here: {why}")
        editor = cls.from_pretrained(wan_dir, sama_checkpoint, device=device, dtype=dtype,
                                     tokenizer_dir=tokenizer_dir)
        editor._attach_engines(Path(engine_dir))
        return editor

    def _attach_engines(self, engine_dir: Path) -> None:
        import tensorrt as trt

        from .engines.artifact import load_artifact
        from .engines.backends import Backend, TensorRTDiT, TensorRTTextEncoder
        from .engines.tensorrt_adapter import EngineRunner, SharedWorkspace
        from .export.wrappers import DiTForExport, TextEncoderForExport
        from .runners import _TextOnDevice

        capability = torch.cuda.get_device_capability(self.device)
        workspace, stream = SharedWorkspace(), torch.cuda.Stream(self.device)

        def runner(name: str, module, prefix: str) -> EngineRunner:
            # Stale engines (other TensorRT, GPU or weights) are refused with the rebuild command.
            artifact = load_artifact(engine_dir, name, trt.__version__, capability)
            weights = {prefix + key: value for key, value in module.state_dict().items()}  # initializer names
            return EngineRunner(artifact.read_plan_bytes(), workspace, stream, refit_weights=weights)

        self.dit_runner = TensorRTDiT(runner("dit", self.dit, DiTForExport.weight_prefix), self.dit.config)
        text = runner("text_encoder", self.text_encoder, TextEncoderForExport.weight_prefix)
        self.text_encoder = _TextOnDevice(TensorRTTextEncoder(text), self.device)
        self.backend = Backend.TENSORRT

    @classmethod
    def from_config(
        cls, name: str = "tiny", seed: int = 0, device="cpu", dtype: torch.dtype = torch.float32,
        *, attention: str = "auto", parallel: Optional[ParallelConfig] = None, backend: str = "torch",
        onnx_dir=None, runtime: Optional[RuntimeOptions] = None,
    ) -> "Editor":
        """Seeded random weights at a preset size: demo, tests, benchmarks. No edit meaning.

        backend="onnxruntime" exports these models once (cached under ~/.cache/sama-rt or
        $SAMA_RT_CACHE) and runs the graphs."""
        from .models.dit import DiTConfig, build_dit
        from .models.random_weights import init_random_weights
        from .models.text_encoder import TextEncoderConfig, UMT5Encoder
        from .models.tiny_tokenizer import tiny_tokenizer
        from .models.vae import VAEConfig, WanVAE

        dit_cfg = DiTConfig.preset(name)
        if parallel is not None:
            device = _parallel_device(parallel, dit_cfg.num_heads, device)
        text_cfg = TextEncoderConfig.preset("sama-14b" if name == "sama-14b" else "tiny")
        vae_cfg = VAEConfig.preset("sama-14b" if name == "sama-14b" else "tiny")
        if text_cfg.dim != dit_cfg.text_dim:
            raise ValueError(f"preset {name!r}: text encoder dim {text_cfg.dim} != DiT text_dim {dit_cfg.text_dim}")
        tokenizer = tiny_tokenizer()
        if tokenizer.vocab_size > text_cfg.vocab:
            raise ValueError("tokenizer vocabulary exceeds the text encoder's")
        runtime = runtime or RuntimeOptions()
        runtime.check_device(device)
        dit = build_dit(dit_cfg, dtype=dtype, device=runtime.load_device(device), seed=seed)
        with torch.device("meta"):
            text_encoder = UMT5Encoder(text_cfg)
            vae = WanVAE(vae_cfg)
        init_random_weights(text_encoder, seed=seed + 1, dtype=dtype, device=runtime.load_device(device))
        init_random_weights(vae, seed=seed + 2, dtype=dtype, device=device)
        if backend == "onnxruntime" and onnx_dir is None:
            from .runners import export_cache_dir, export_in_memory

            onnx_dir = export_in_memory(export_cache_dir(name, seed), dit, text_encoder, vae)
        prepare_dit(dit, device, runtime)
        text_encoder = prepare_text_encoder(text_encoder, device, runtime)
        return cls(dit, text_encoder, tokenizer, vae, attention=attention, parallel=parallel,
                   backend=backend, onnx_dir=onnx_dir, runtime=runtime)

    def record_calibration(self, stride: int = 5, limit: Optional[int] = 64):
        """Record the DiT inputs of the following edits (every `stride`-th call, at most
        `limit`) as FP8/INT8 calibration data, so users calibrate on their own videos.

            recorder = editor.record_calibration()
            editor.edit("clip.mp4", "...")
            save_calibration_set(recorder.calibration, "calib.safetensors")  # sama_rt.engines.calibration

        Recording routes denoising through plain model calls (the inputs a graph sees).
        """
        from .engines.calibration import CalibrationRecorder

        recorder = CalibrationRecorder(self.dit_runner, stride=stride, limit=limit)
        self.dit_runner = recorder
        return recorder

    # -- the path ----------------------------------------------------------------------
    def edit(
        self,
        video: VideoInput,
        instruction: str,
        params: Optional[EditParams] = None,
        *,
        fps: Optional[float] = None,
        progress: Optional[ProgressCallback] = None,
    ) -> EditResult:
        """Edit `video` (a file path, or uint8 frames [T, H, W, 3]) as `instruction` says.

        The path: decode -> encode prompts -> per window (one window unless the clip is
        longer than `params.window`): preprocess -> VAE-encode -> denoise -> VAE-decode ->
        postprocess -> stitch.
        """
        params = params or EditParams()
        positive, negative = params.prompts(instruction)  # validates before any heavy work
        timer = StageTimer(self.device)
        with timer.stage("decode"):
            source = open_source(video, params.max_frames, fps)
        with timer.stage("text"):
            context, negative_context = self.encode_prompts(positive, negative)
        windows = self.edit_windows(source, context, negative_context, params, timer, progress)
        chunks = list(stitch(windows, params.crossfade))
        writer = self.parallel is None or self.parallel.is_writer
        return EditResult(np.concatenate(chunks), source.fps, timer.as_dict(), source.path, source.audio,
                          writer=writer)

    def edit_to_file(
        self,
        video: VideoInput,
        instruction: str,
        output,
        params: Optional[EditParams] = None,
        *,
        fps: Optional[float] = None,
        overwrite: bool = False,
        progress: Optional[ProgressCallback] = None,
    ) -> SavedEdit:
        """Like `edit(...).save(output)`, streaming: each window is encoded as soon as it is
        done, so memory does not grow with the clip's length."""
        params = params or EditParams()
        positive, negative = params.prompts(instruction)
        timer = StageTimer(self.device)
        with timer.stage("decode"):
            source = open_source(video, params.max_frames, fps)
        with timer.stage("text"):
            context, negative_context = self.encode_prompts(positive, negative)
        if self.parallel is not None and not self.parallel.is_writer:
            for _ in self.edit_windows(source, context, negative_context, params, timer, progress):
                pass
            return SavedEdit(Path(output), 0, source.fps, timer.as_dict())
        inputs = [source.path] if source.path is not None else []
        with VideoWriter(output, source.fps, audio_from=source.path if source.audio else None, crf=params.crf,
                         overwrite=overwrite, inputs=inputs) as writer:
            windows = self.edit_windows(source, context, negative_context, params, timer, progress)
            for frames in stitch(windows, params.crossfade):
                with timer.stage("encode"):
                    writer.write(frames)
            with timer.stage("encode"):
                path = writer.close()
        return SavedEdit(path, writer.count, source.fps, timer.as_dict())

    def edit_windows(self, source: "FrameSource", context, negative_context, params: EditParams,
                     timer: StageTimer, progress: Optional[ProgressCallback] = None) -> Iterator["EditedWindow"]:
        """Edited windows in order; stitching keeps each window's `new_frames`."""
        report = progress or (lambda stage, done, total: None)
        buckets = resolution_buckets(params.pixel_budget)
        n_windows = total_hint(source.num_frames, params.window, params.overlap)
        windows = iterate_windows(source.frames, params.window, params.overlap)
        anchor, tail = None, None
        for index in count():
            with timer.stage("decode"):
                frames = next(windows, None)
            if frames is None:
                break
            with timer.stage("preprocess"):
                prepared = prepare_frames(frames, buckets)
            report("vae_encode", index, n_windows or index + 1)
            with timer.stage("vae_encode"):
                source_latents = self.encode_video(prepared.frames, params)
                noise, semantic_noise = initial_noise(
                    window_seed(params.seed, index), tuple(source_latents.shape), params.num_semantic_tokens,
                    self.dit.config.siglip_dim,
                )
                pins = self.window_pins(tail, anchor, noise, semantic_noise, params)
            with timer.stage("denoise"):
                latents, semantic = self.denoise(
                    noise, semantic_noise, source_latents, context, negative_context, params, timer,
                    _window_progress(report, index, n_windows, params.steps), pins=pins,
                )
            report("vae_decode", index, n_windows or index + 1)
            with timer.stage("vae_decode"):
                decoded = self.decode_latents(latents, params)
            with timer.stage("postprocess"):
                edited = finish_frames(prepared, tensor_to_frames(decoded))
            if anchor is None:
                anchor = semantic
            tail = edited[-params.overlap:]
            yield EditedWindow(index, edited, 0 if index == 0 else params.overlap)
        report("done", 1, 1)

    def window_pins(self, tail, anchor, noise, semantic_noise, params: EditParams) -> Optional[Pins]:
        """Pins for a window after the first: its overlap latents and the anchor."""
        if tail is None:
            return None
        latents = None
        if params.propagate_motion:
            known = self.encode_video(tail, params)  # causal VAE: = the window's first latent frames
            latents = (known.to(self.device), noise[:, :, : known.shape[2]].to(self.device))
        semantic = (anchor, semantic_noise.to(self.device)) if params.reuse_anchor else None
        return Pins(latents=latents, semantic=semantic)

    # -- the steps -----------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompts(self, positive: str, negative: str) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.tokenizer.count_tokens(positive)
        if n > MAX_TEXT_TOKENS:
            logger.warning("the instruction is %d tokens long; only the first %d are used", n, MAX_TEXT_TOKENS)
        ids, mask = self.tokenizer([positive, negative], max_length=MAX_TEXT_TOKENS)
        device = self.text_encoder.device
        context = self.text_encoder(ids.to(device), mask.to(device))
        return context[:1], context[1:]

    @torch.no_grad()
    def encode_video(self, frames: np.ndarray, params: EditParams) -> torch.Tensor:
        video = frames_to_tensor(frames, dtype=self.vae.dtype, device=self.vae.device)
        return self.vae.encode(
            video, tiled=params.tiled_vae, tile_size=params.vae_tile_size, tile_stride=params.vae_tile_stride
        ).float()

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, params: EditParams) -> torch.Tensor:
        return self.vae.decode(
            latents.to(device=self.vae.device, dtype=self.vae.dtype),
            tiled=params.tiled_vae, tile_size=params.vae_tile_size, tile_stride=params.vae_tile_stride,
        )

    def denoise(self, noise, semantic_noise, source_latents, context, negative_context,
                params: EditParams, timer: Optional[StageTimer] = None,
                report: Optional[ProgressCallback] = None,
                pins: Optional[Pins] = None) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.device
        args = [t.to(device) for t in (noise, semantic_noise, source_latents, context, negative_context)]
        if self.dit_runner is not self.dit:  # a graph or engine: plain CFG calls
            def predictor(x, s, timestep):
                return guided_velocity(self.dit_runner, x, s, timestep, args[2], args[3], args[4], params.cfg_scale)
        elif self.parallel is not None:
            from .parallel.predictor import ParallelGuidedPredictor

            predictor = ParallelGuidedPredictor(self.dit, args[2], args[3], args[4], params.cfg_scale, self.parallel)
        elif self.fast:
            predictor = GuidedPredictor(self.dit, args[2], args[3], args[4], params.cfg_scale)
            if params.cache_threshold > 0 and self.runtime.cuda_graphs:
                raise ValueError("step caching decides per step whether to run the blocks, which a "
                                 "CUDA graph cannot; turn off cuda_graphs or cache_threshold")
            predictor = wrap_predictor(predictor, self.runtime)
        else:
            def predictor(x, s, timestep):
                return guided_velocity(self.dit, x, s, timestep, args[2], args[3], args[4], params.cfg_scale)
        predictor = self._approximated(predictor, params, args)

        if timer is not None:
            timer.start_steps()

        def on_step(i: int, n: int) -> None:
            if timer is not None:
                timer.step()
            if report is not None:
                report("denoise", i, n)

        if params.solver != "euler":
            from .acceleration import solve

            return solve(predictor, args[0], args[1], flow_match_sigmas(params.steps, params.shift), params.solver,
                         pins=pins, callback=on_step)
        return denoise(
            self.dit, *args, num_steps=params.steps, cfg_scale=params.cfg_scale, shift=params.shift,
            callback=on_step, predictor=predictor, pins=pins,
        )

    def _approximated(self, predictor, params: EditParams, args):
        """`predictor` with the opt-in approximations of `params` (itself when none is on)."""
        if params.cache_threshold == 0 and params.cfg_skip_after == 1:
            return predictor
        if self.parallel is not None:
            raise ValueError("step caching and CFG skipping do not run with parallel editing yet")
        from .acceleration import approximate

        def positive_only(x, s, timestep):
            return guided_velocity(self.dit_runner, x, s, timestep, args[2], args[3], args[4], 1.0)

        return approximate(predictor, steps=params.steps, shift=params.shift, cfg_scale=params.cfg_scale,
                           cache_threshold=params.cache_threshold, cfg_skip_after=params.cfg_skip_after,
                           positive_only=positive_only)


def _parallel_device(parallel: ParallelConfig, num_heads: int, device) -> torch.device:
    """Check the degrees against the launch and start the process group, before any weight
    loads; -> this rank's device (a bare "cuda" becomes cuda:LOCAL_RANK)."""
    from .parallel import setup_parallel

    groups = setup_parallel(parallel, num_heads, device)
    return groups.device if groups is not None else torch.device(device)
