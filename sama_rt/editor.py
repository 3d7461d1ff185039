"""`Editor`: video + instruction -> edited video.

Read `Editor.edit` top to bottom for the whole path:
decode -> preprocess -> encode prompts -> VAE-encode source -> denoise -> VAE-decode ->
postprocess -> result. Each step is one call into one module.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch

from .guided import GuidedPredictor
from .models.attention import select_attention_backend
from .params import EditParams
from .sampling import denoise, guided_velocity, initial_noise
from .timing import StageTimer
from .video.io import FALLBACK_FPS, AudioTrack, VideoError, read_video, write_video
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

    def save(self, path, *, overwrite: bool = False, crf: int = 25) -> Path:
        """Write H.264 at the source fps, keeping the source's audio; atomic."""
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


class Editor:
    """Holds the three models and runs edits. Build with `from_pretrained` or `from_config`."""

    def __init__(self, dit, text_encoder, tokenizer, vae, *, attention: str = "auto", fast: bool = True):
        self.dit = dit
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.vae = vae
        self.fast = fast
        self.device = dit.device
        self.dit.with_attention(select_attention_backend(attention, self.device))

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
    ) -> "Editor":
        """Load the layout users download: the Wan2.1-T2V-14B directory + the SAMA file."""
        from .models.dit import load_dit
        from .models.text_encoder import load_text_encoder
        from .models.tokenizer import PromptTokenizer
        from .models.vae import load_vae

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
        # Check every file before loading the biggest one.
        tokenizer = PromptTokenizer.from_pretrained(files["umT5 tokenizer"])
        vae = load_vae(files["Wan VAE"], dtype=dtype, device=device)
        text_encoder = load_text_encoder(files["umT5 encoder"], dtype=dtype, device=device)
        dit = load_dit([wan_dir, files["SAMA checkpoint"]], dtype=dtype, device=device)
        return cls(dit, text_encoder, tokenizer, vae, attention=attention)

    @classmethod
    def from_config(
        cls, name: str = "tiny", seed: int = 0, device="cpu", dtype: torch.dtype = torch.float32,
        *, attention: str = "auto",
    ) -> "Editor":
        """Seeded random weights at a preset size: demo, tests, benchmarks. No edit meaning."""
        from .models.dit import DiTConfig, build_dit
        from .models.random_weights import init_random_weights
        from .models.text_encoder import TextEncoderConfig, UMT5Encoder
        from .models.tiny_tokenizer import tiny_tokenizer
        from .models.vae import VAEConfig, WanVAE

        dit_cfg = DiTConfig.preset(name)
        text_cfg = TextEncoderConfig.preset("sama-14b" if name == "sama-14b" else "tiny")
        vae_cfg = VAEConfig.preset("sama-14b" if name == "sama-14b" else "tiny")
        if text_cfg.dim != dit_cfg.text_dim:
            raise ValueError(f"preset {name!r}: text encoder dim {text_cfg.dim} != DiT text_dim {dit_cfg.text_dim}")
        tokenizer = tiny_tokenizer()
        if tokenizer.vocab_size > text_cfg.vocab:
            raise ValueError("tokenizer vocabulary exceeds the text encoder's")
        dit = build_dit(dit_cfg, dtype=dtype, device=device, seed=seed)
        with torch.device("meta"):
            text_encoder = UMT5Encoder(text_cfg)
            vae = WanVAE(vae_cfg)
        init_random_weights(text_encoder, seed=seed + 1, dtype=dtype, device=device)
        init_random_weights(vae, seed=seed + 2, dtype=dtype, device=device)
        return cls(dit, text_encoder, tokenizer, vae, attention=attention)

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
        """Edit `video` (a file path, or uint8 frames [T, H, W, 3]) as `instruction` says."""
        params = params or EditParams()
        positive, negative = params.prompts(instruction)  # validates before any heavy work
        timer = StageTimer(self.device)
        report = progress or (lambda stage, done, total: None)

        with timer.stage("decode"):
            frames, video_fps, source, audio = self.read(video, params.max_frames, fps)
        with timer.stage("preprocess"):
            prepared = prepare_frames(frames, resolution_buckets(params.pixel_budget))
        with timer.stage("text"):
            context, negative_context = self.encode_prompts(positive, negative)
        report("vae_encode", 0, 1)
        with timer.stage("vae_encode"):
            source_latents = self.encode_video(prepared.frames, params)
        noise, semantic_noise = initial_noise(
            params.seed, tuple(source_latents.shape), params.num_semantic_tokens, self.dit.config.siglip_dim
        )
        with timer.stage("denoise"):
            latents = self.denoise(noise, semantic_noise, source_latents, context, negative_context,
                                   params, timer, report)
        report("vae_decode", 0, 1)
        with timer.stage("vae_decode"):
            decoded = self.decode_latents(latents, params)
        with timer.stage("postprocess"):
            edited = finish_frames(prepared, tensor_to_frames(decoded))
        report("done", 1, 1)
        return EditResult(edited, video_fps, timer.as_dict(), source, audio)

    # -- the steps -----------------------------------------------------------------------
    @staticmethod
    def read(video: VideoInput, max_frames: Optional[int], fps: Optional[float]):
        """-> (uint8 frames [T,H,W,3], fps, source path or None, audio track or None)."""
        if isinstance(video, (str, Path)):
            clip = read_video(video, max_frames=max_frames)
            return clip.frames, clip.fps, clip.path, clip.audio
        frames = video.cpu().numpy() if isinstance(video, torch.Tensor) else np.asarray(video)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
            raise VideoError(
                f"frames must be a non-empty uint8 array [T, H, W, 3], got {frames.dtype} {list(frames.shape)}"
            )
        if max_frames is not None:
            frames = frames[:max_frames]
        return frames, float(fps or FALLBACK_FPS), None, None

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
                report: Optional[ProgressCallback] = None) -> torch.Tensor:
        device = self.device
        args = [t.to(device) for t in (noise, semantic_noise, source_latents, context, negative_context)]
        if self.fast:
            predictor = GuidedPredictor(self.dit, args[2], args[3], args[4], params.cfg_scale)
        else:
            def predictor(x, s, timestep):
                return guided_velocity(self.dit, x, s, timestep, args[2], args[3], args[4], params.cfg_scale)

        if timer is not None:
            timer.start_steps()

        def on_step(i: int, n: int) -> None:
            if timer is not None:
                timer.step()
            if report is not None:
                report("denoise", i, n)

        latents, _semantic = denoise(
            self.dit, *args, num_steps=params.steps, cfg_scale=params.cfg_scale, shift=params.shift,
            callback=on_step, predictor=predictor,
        )
        return latents
