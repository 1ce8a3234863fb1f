"""Model configuration: one frozen dataclass for every supported family, plus presets.

Families differ only by the switches below (biases, q/k norms, norm offsets, soft caps,
sliding windows, RoPE variants); the forward pass reads them, so there is one model,
not a copy per family. Configs are hashable and used as static arguments under `jit`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Literal

import numpy as np

Activation = Literal["silu", "gelu_tanh"]
# "auto": the Pallas kernel where the program is compiled for a TPU, XLA elsewhere.
ATTENTION_BACKENDS = ("auto", "xla", "pallas")


@dataclasses.dataclass(frozen=True)
class RopeConfig:
  """Rotary embedding of one attention kind (global or local layers).

  Attributes:
    theta: base frequency.
    kind: "default" (plain RoPE), "linear" (positions divided by `factor`) or
      "llama3" (Llama 3.1's piecewise frequency scaling).
    factor, low_freq_factor, high_freq_factor, original_max_position: scaling knobs
      of the "linear" and "llama3" kinds (ignored by "default").
  """
  theta: float = 10000.0
  kind: Literal["default", "linear", "llama3"] = "default"
  factor: float = 1.0
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_position: int = 8192

  def inv_freq(self, head_dim: int) -> np.ndarray:
    """Per-pair inverse frequencies `[head_dim // 2]` in float64, scaling applied."""
    inv = 1.0 / (self.theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    if self.kind == "default":
      return inv
    if self.kind == "linear":
      return inv / self.factor
    if self.kind == "llama3":
      # Long wavelengths are slowed by `factor`, short ones kept, a smooth ramp between
      # (transformers' `_compute_llama3_parameters`).
      low_wavelen = self.original_max_position / self.low_freq_factor
      high_wavelen = self.original_max_position / self.high_freq_factor
      wavelen = 2 * math.pi / inv
      scaled = np.where(wavelen > low_wavelen, inv / self.factor, inv)
      smooth = (self.original_max_position / wavelen - self.low_freq_factor) / (
          self.high_freq_factor - self.low_freq_factor)
      smoothed = (1 - smooth) * scaled / self.factor + smooth * scaled
      medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
      return np.where(medium, smoothed, scaled)
    raise ValueError(f"unknown RoPE kind {self.kind!r}; use default, linear or llama3")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """A decoder-only transformer of the Llama / Qwen / Gemma families.

  Attributes:
    family: "llama", "qwen2", "qwen3", "gemma2" or "gemma3" (checkpoint naming).
    vocab_size, d_model, n_layers, n_heads, n_kv_heads, head_dim, ffw_dim: shapes.
    norm_eps: RMSNorm epsilon.
    norm_offset: 1.0 for Gemma's `x * (1 + w)` norms, 0.0 for `x * w`.
    rope: RoPE of global layers; `local_rope` of sliding-window layers (Gemma 3).
    tie_embeddings: the output head reuses the input embedding.
    qkv_bias: q/k/v projections have biases (Qwen2).
    qk_norm: RMSNorm on q and k per head before RoPE (Qwen3, Gemma 3).
    post_norms: extra norms after attention and after the MLP (Gemma 2/3).
    embed_scale: multiply embeddings by sqrt(d_model) (Gemma).
    attn_scale: query scale; None means head_dim ** -0.5.
    attn_softcap, final_softcap: tanh soft caps of attention scores and logits (Gemma 2).
    sliding_window: window of local layers (tokens a query may see, itself included).
    layer_is_local: per layer, True where the layer uses the sliding window.
    activation: MLP gate activation.
    max_seq_len: the longest sequence the model is used for (cache default).
    dtype: activation (compute) dtype name ("float32" or "bfloat16"); matmuls take
      operands in this dtype and accumulate in float32.
    param_dtype: storage dtype of the params; None means `dtype`. "float32" with
      dtype "bfloat16" is mixed precision: float32 master weights (the optimizer
      updates them in float32), cast to bfloat16 inside each matmul.
    remat: rematerialisation of the layer scan in training passes (no cache):
      "none", "layer" or "dots" (see `forward._remat`); sampling ignores it.
    attention_backend: the attention implementation (`attention.attention`): "xla",
      "pallas" (a library Pallas kernel, `reasoning_jax.kernels`) or "auto" (Pallas
      where the program is compiled for a TPU and computes in bf16, XLA elsewhere).
  """
  family: str = "llama"
  vocab_size: int = 256
  d_model: int = 64
  n_layers: int = 2
  n_heads: int = 4
  n_kv_heads: int = 2
  head_dim: int = 16
  ffw_dim: int = 128
  norm_eps: float = 1e-6
  norm_offset: float = 0.0
  rope: RopeConfig = RopeConfig()
  local_rope: RopeConfig | None = None
  tie_embeddings: bool = True
  qkv_bias: bool = False
  qk_norm: bool = False
  post_norms: bool = False
  embed_scale: bool = False
  attn_scale: float | None = None
  attn_softcap: float | None = None
  final_softcap: float | None = None
  sliding_window: int | None = None
  layer_is_local: tuple[bool, ...] | None = None
  activation: Activation = "silu"
  max_seq_len: int = 2048
  dtype: str = "float32"
  param_dtype: str | None = None
  remat: str = "none"
  attention_backend: str = "auto"

  def __post_init__(self):
    if self.n_heads % self.n_kv_heads:
      raise ValueError(
          f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads} (GQA)")
    if self.layer_is_local is not None:
      if len(self.layer_is_local) != self.n_layers:
        raise ValueError(f"layer_is_local has {len(self.layer_is_local)} entries for "
                         f"n_layers={self.n_layers}; give one flag per layer")
      if any(self.layer_is_local) and not self.sliding_window:
        raise ValueError("local layers need a sliding_window size")
    if self.activation not in ("silu", "gelu_tanh"):
      raise ValueError(f"activation {self.activation!r}: use 'silu' or 'gelu_tanh'")
    for name in ("dtype", "param_dtype"):
      v = getattr(self, name)
      if v not in ("float32", "bfloat16") and not (name == "param_dtype" and v is None):
        raise ValueError(f"{name} {v!r}: use 'float32' or 'bfloat16'")
    if self.remat not in ("none", "layer", "dots"):
      raise ValueError(f"remat {self.remat!r}: use 'none', 'layer' (recompute each layer "
                       "in the backward pass) or 'dots' (keep projection outputs)")
    if self.attention_backend not in ATTENTION_BACKENDS:
      raise ValueError(f"attention_backend {self.attention_backend!r}: use one of "
                       f"{ATTENTION_BACKENDS}")

  @property
  def weight_dtype(self) -> str:
    """The params' storage dtype (`param_dtype`, defaulting to `dtype`)."""
    return self.param_dtype or self.dtype

  @property
  def local_flags(self) -> tuple[bool, ...]:
    """Per-layer sliding-window flags (all False when the model has no local layers)."""
    return self.layer_is_local or (False,) * self.n_layers

  @property
  def query_scale(self) -> float:
    """The factor queries are multiplied by before the dot product with keys."""
    return self.attn_scale if self.attn_scale is not None else self.head_dim ** -0.5

  def replace(self, **kw) -> "ModelConfig":
    """A copy with some fields changed (validation re-runs)."""
    return dataclasses.replace(self, **kw)

  def num_params(self) -> int:
    """Parameter count (embedding counted once when tied)."""
    d, f, h = self.d_model, self.ffw_dim, self.head_dim
    attn = d * h * (2 * self.n_heads + 2 * self.n_kv_heads)
    per_layer = attn + 3 * d * f
    head = 0 if self.tie_embeddings else self.vocab_size * d
    return self.n_layers * per_layer + self.vocab_size * d + head


# ----------------------------------------------------------------------------- presets
# Presets are functions (gin binds them by name); shapes are the published ones.


def tiny(vocab_size: int = 64, dtype: str = "float32") -> ModelConfig:
  """A ~100K-parameter Llama-style model for CPU tests and the quickstart."""
  return ModelConfig(family="llama", vocab_size=vocab_size, d_model=64, n_layers=2,
                     n_heads=4, n_kv_heads=2, head_dim=16, ffw_dim=256, max_seq_len=256,
                     dtype=dtype)


def ref_tiny(dtype: str = "float32") -> ModelConfig:
  """The "ref-tiny" Qwen3-like benchmark model (4 layers, d=256, vocab 512)."""
  return ModelConfig(family="qwen3", vocab_size=512, d_model=256, n_layers=4, n_heads=4,
                     n_kv_heads=2, head_dim=64, ffw_dim=1024, qk_norm=True,
                     rope=RopeConfig(theta=1e6), max_seq_len=256, dtype=dtype)


def smollm2_135m(dtype: str = "bfloat16") -> ModelConfig:
  """SmolLM2-135M(-Instruct): Llama architecture, 30 layers, tied embeddings."""
  return ModelConfig(family="llama", vocab_size=49152, d_model=576, n_layers=30,
                     n_heads=9, n_kv_heads=3, head_dim=64, ffw_dim=1536, norm_eps=1e-5,
                     rope=RopeConfig(theta=100000.0), tie_embeddings=True,
                     max_seq_len=8192, dtype=dtype)


def llama3_2_1b(dtype: str = "bfloat16") -> ModelConfig:
  """Llama 3.2 1B with the llama3 RoPE scaling."""
  return ModelConfig(family="llama", vocab_size=128256, d_model=2048, n_layers=16,
                     n_heads=32, n_kv_heads=8, head_dim=64, ffw_dim=8192, norm_eps=1e-5,
                     rope=RopeConfig(theta=500000.0, kind="llama3", factor=32.0,
                                     low_freq_factor=1.0, high_freq_factor=4.0,
                                     original_max_position=8192),
                     tie_embeddings=True, max_seq_len=131072, dtype=dtype)


def qwen2_5_0_5b(dtype: str = "bfloat16") -> ModelConfig:
  """Qwen2.5-0.5B(-Instruct): q/k/v biases, tied embeddings."""
  return ModelConfig(family="qwen2", vocab_size=151936, d_model=896, n_layers=24,
                     n_heads=14, n_kv_heads=2, head_dim=64, ffw_dim=4864, norm_eps=1e-6,
                     rope=RopeConfig(theta=1000000.0), tie_embeddings=True, qkv_bias=True,
                     max_seq_len=32768, dtype=dtype)


def qwen3_0_6b(dtype: str = "bfloat16") -> ModelConfig:
  """Qwen3-0.6B, the Tsallis paper's model: q/k RMSNorm, head_dim 128."""
  return ModelConfig(family="qwen3", vocab_size=151936, d_model=1024, n_layers=28,
                     n_heads=16, n_kv_heads=8, head_dim=128, ffw_dim=3072, norm_eps=1e-6,
                     rope=RopeConfig(theta=1000000.0), tie_embeddings=True, qk_norm=True,
                     max_seq_len=40960, dtype=dtype)


def qwen3_8b(dtype: str = "bfloat16") -> ModelConfig:
  """Qwen3-8B (untied embeddings)."""
  return ModelConfig(family="qwen3", vocab_size=151936, d_model=4096, n_layers=36,
                     n_heads=32, n_kv_heads=8, head_dim=128, ffw_dim=12288, norm_eps=1e-6,
                     rope=RopeConfig(theta=1000000.0), tie_embeddings=False, qk_norm=True,
                     max_seq_len=40960, dtype=dtype)


def gemma2_2b(dtype: str = "bfloat16") -> ModelConfig:
  """Gemma 2 2B: soft caps, pre+post norms, alternating 4096-token sliding windows."""
  n = 26
  return ModelConfig(family="gemma2", vocab_size=256000, d_model=2304, n_layers=n,
                     n_heads=8, n_kv_heads=4, head_dim=256, ffw_dim=9216, norm_eps=1e-6,
                     norm_offset=1.0, rope=RopeConfig(theta=10000.0), tie_embeddings=True,
                     post_norms=True, embed_scale=True, attn_scale=256 ** -0.5,
                     attn_softcap=50.0, final_softcap=30.0, sliding_window=4096,
                     layer_is_local=tuple(i % 2 == 0 for i in range(n)),
                     activation="gelu_tanh", max_seq_len=8192, dtype=dtype)


def gemma3_1b(dtype: str = "bfloat16") -> ModelConfig:
  """Gemma 3 1B (text): q/k norm, 5 local : 1 global layers with their own RoPE bases."""
  n = 26
  return ModelConfig(family="gemma3", vocab_size=262144, d_model=1152, n_layers=n,
                     n_heads=4, n_kv_heads=1, head_dim=256, ffw_dim=6912, norm_eps=1e-6,
                     norm_offset=1.0, rope=RopeConfig(theta=1000000.0),
                     local_rope=RopeConfig(theta=10000.0), tie_embeddings=True,
                     qk_norm=True, post_norms=True, embed_scale=True,
                     attn_scale=256 ** -0.5, sliding_window=512,
                     layer_is_local=tuple((i + 1) % 6 != 0 for i in range(n)),
                     activation="gelu_tanh", max_seq_len=32768, dtype=dtype)


PRESETS = {
    "tiny": tiny, "ref_tiny": ref_tiny, "smollm2_135m": smollm2_135m,
    "llama3_2_1b": llama3_2_1b, "qwen2_5_0_5b": qwen2_5_0_5b, "qwen3_0_6b": qwen3_0_6b,
    "qwen3_8b": qwen3_8b, "gemma2_2b": gemma2_2b, "gemma3_1b": gemma3_1b,
}


def preset(name: str, **overrides) -> ModelConfig:
  """Look a preset up by name, with field overrides (e.g. dtype)."""
  if name not in PRESETS:
    raise ValueError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
  dtype = overrides.pop("dtype", None)
  cfg = PRESETS[name]() if dtype is None else PRESETS[name](dtype=dtype)
  return cfg.replace(**overrides) if overrides else cfg
