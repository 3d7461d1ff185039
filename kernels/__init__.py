"""Triton kernels of sama-rt (installed as sama_rt.kernels)."""
from ..models.rope import rope_tables
from .anchor_attention import AttentionPrecision, KernelLanguage, KeyRotation, anchor_attention, anchor_attention_ref

__all__ = ["AttentionPrecision", "KernelLanguage", "KeyRotation", "anchor_attention", "anchor_attention_ref",
           "rope_tables"]
