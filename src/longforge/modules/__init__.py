"""Small reusable pieces: normalisation, rotary embeddings, HyPE scaling."""

from .norm import RMSNorm, rms_norm
from .rotary import RotaryEmbedding, apply_rotary, hype_logit_scale, rope_inv_freq, rotate_half

__all__ = ["RMSNorm", "rms_norm", "RotaryEmbedding", "apply_rotary", "hype_logit_scale", "rope_inv_freq", "rotate_half"]
