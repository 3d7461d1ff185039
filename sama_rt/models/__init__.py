"""Model definitions that load the released SAMA / Wan2.1 weights strictly."""
from .checkpoint import CheckpointError
from .dit import DiTConfig, SamaDiT, build_dit, load_dit
from .text_encoder import TextEncoderConfig, UMT5Encoder, encode_prompts, load_text_encoder
from .tokenizer import PromptTokenizer, clean_prompt
from .vae import CausalCache, VAEConfig, WanVAE, load_vae

__all__ = [
    "CheckpointError", "DiTConfig", "SamaDiT", "build_dit", "load_dit",
    "TextEncoderConfig", "UMT5Encoder", "encode_prompts", "load_text_encoder",
    "PromptTokenizer", "clean_prompt",
    "CausalCache", "VAEConfig", "WanVAE", "load_vae",
]
