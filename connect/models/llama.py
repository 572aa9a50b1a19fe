"""Llama (Touvron et al. 2023), Qwen2 and Mistral with exactly Hugging Face ``LlamaForCausalLM``'s,
``Qwen2ForCausalLM``'s and ``MistralForCausalLM``'s eval-mode arithmetic. For tokens ``t_1..t_T``::

    x⁰_i = E[t_i];   a = x^l + Attn(RMS_1(x^l)),  x^{l+1} = a + MLP(RMS_2(a));   logits = RMS_f(x^L) Wᵀ (W = E if tied)
    RMS(x)  = scale · x / √(mean x² + ε)                              (Zhang & Sennrich 2019)
    MLP(x)  = (silu(x W_gate) ⊙ x W_up) W_down                        SwiGLU (Shazeer 2020)
    Attn(x) = concat_n softmax(R_i q_n · R_j k_{g(n)} / √d_h + mask) v_{g(n)} W_o,   g(n) = n // (N_q / N_kv)
              (grouped-query, Ainslie et al. 2023); q, k, v, o = x W (+ b)
    R_i y   = y cos(iθ) + rotate_half(y) sin(iθ)                      RoPE (Su et al. 2021), Hugging Face's half layout
    mask    : key j visible to query i iff j ≤ i (and i − j < sliding_window on sliding layers)

Params are a plain dict, per-layer arrays stacked on a leading ``L`` for ``lax.scan``, kernels ``(in, out)``; Llama biases
q, k, v and o or none, Qwen2 q, k, v, Mistral none; Llama's MLP may have biases::

    {"embed_tokens": (V, D), "norm": {"scale": (D,)}, "lm_head": (V, D) (untied only), "layers": {
        "input_layernorm", "post_attention_layernorm": {"scale": (L, D)},
        "self_attn": {"q_proj", "k_proj", "v_proj", "o_proj": {"kernel": (L, in, out), "bias": (L, out) (qkv_bias, o_bias)}},
        "mlp": {"gate_proj", "up_proj", "down_proj": {"kernel": (L, in, out), "bias": (L, out) (mlp_bias)}}}}
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from connect.errors import UserError
from connect.models import language

#: The family's name, recorded as ``"model"`` in its checkpoints (:mod:`connect.models`).
FAMILY = "llama"
MODEL_TYPES = ("llama", "qwen2", "mistral")
_INTS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
         "max_position_embeddings")
_LLAMA3 = ("rope_factor", "rope_low_freq_factor", "rope_high_freq_factor", "rope_original_max_position_embeddings")


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Architecture of a Llama / Qwen2 / Mistral, stored in checkpoints, named as Hugging Face's fields; ``head_dim`` None:
    ``hidden_size // num_attention_heads``; ``rope_*`` scalings for "llama3" only; layers ``≥ max_window_layers`` slide."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    max_position_embeddings: int
    head_dim: int | None = None
    model_type: str = "llama"
    tie_word_embeddings: bool = False
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_type: str = "default"
    rope_factor: float | None = None
    rope_low_freq_factor: float | None = None
    rope_high_freq_factor: float | None = None
    rope_original_max_position_embeddings: int | None = None
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    sliding_window: int | None = None
    max_window_layers: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def d_model(self) -> int:  # width of the residual stream
        return self.hidden_size

    @property
    def n_layers(self) -> int:
        return self.num_hidden_layers

    @property
    def context_limit(self) -> int:  # the longest window the model was built for
        return self.max_position_embeddings

    @property
    def d_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads


#: Named configurations: ``tiny`` trains on a CPU in seconds; ``smollm-135m`` is HuggingFaceTB/SmolLM-135M's
#: and ``qwen2.5-0.5b`` Qwen/Qwen2.5-0.5B's architecture (their config.json).
CONFIGS: dict[str, LlamaConfig] = {
    "tiny": LlamaConfig(256, 64, 176, 2, 4, 2, 64, rms_norm_eps=1e-5),
    "smollm-135m": LlamaConfig(49152, 576, 1536, 30, 9, 3, 2048, tie_word_embeddings=True, rms_norm_eps=1e-5),
    "qwen2.5-0.5b": LlamaConfig(151936, 896, 4864, 24, 14, 2, 32768, model_type="qwen2", tie_word_embeddings=True,
                                rope_theta=1000000.0, qkv_bias=True),
}

#: Standard deviation of the normal init (Hugging Face ``initializer_range``).
INIT_STD = 0.02


def config(name_or_cfg: str | LlamaConfig, **overrides) -> LlamaConfig:
    """A :class:`LlamaConfig` by name (see :data:`CONFIGS`) or as given, with fields overridden and checked."""
    if not (isinstance(name_or_cfg, LlamaConfig) or isinstance(name_or_cfg, str) and name_or_cfg in CONFIGS):
        raise UserError(f"unknown Llama config {name_or_cfg!r}: use one of {', '.join(sorted(CONFIGS))}")
    fields = {f.name for f in dataclasses.fields(LlamaConfig)}
    if unknown := sorted(set(overrides) - fields):
        raise UserError(f"unknown Llama config field(s) {', '.join(unknown)}: use fields among {', '.join(sorted(fields))}")
    cfg = dataclasses.replace(CONFIGS[name_or_cfg] if isinstance(name_or_cfg, str) else name_or_cfg, **overrides)
    _check(cfg)
    return dataclasses.replace(cfg, head_dim=None) if (cfg.head_dim or 0) * cfg.num_attention_heads == cfg.hidden_size else cfg


def _check(cfg: LlamaConfig) -> None:
    """A UserError naming the first invalid field of ``cfg``; ``model_type`` must express the biases and windows
    (so that every config exports to its Hugging Face class)."""
    for name in _INTS + ("head_dim", "sliding_window", "rope_original_max_position_embeddings", "max_window_layers"):
        value, least = getattr(cfg, name), int(name != "max_window_layers")
        if (value is not None or name in _INTS) and (isinstance(value, bool) or not isinstance(value, int) or value < least):
            _refuse(cfg, name, f"use an integer ≥ {least}")
    for name in ("rms_norm_eps", "rope_theta", *_LLAMA3[:3]):
        value = getattr(cfg, name)
        if (value is not None or name in ("rms_norm_eps", "rope_theta")) and not (
                isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf):
            _refuse(cfg, name, "use a finite positive number")
    for name in ("tie_word_embeddings", "qkv_bias", "o_bias", "mlp_bias"):
        if not isinstance(getattr(cfg, name), bool):
            _refuse(cfg, name, "use true or false")
    if cfg.rope_type not in ("default", "llama3"):
        _refuse(cfg, "rope_type", "use 'default' or 'llama3'")
    heads, llama3, qkv, o, mlp = cfg.num_attention_heads, cfg.rope_type == "llama3", cfg.qkv_bias, cfg.o_bias, cfg.mlp_bias
    for name in _LLAMA3:
        if (getattr(cfg, name) is None) == llama3:
            _refuse(cfg, name, "set the rope_* scalings exactly for rope_type 'llama3'")
    expressible = {"llama": qkv == o and cfg.sliding_window is None and not cfg.max_window_layers,
                   "qwen2": qkv and not o and not mlp, "mistral": not (qkv or o or mlp or cfg.max_window_layers)}
    for name, ok, want in [
        ("num_key_value_heads", heads % cfg.num_key_value_heads == 0, f"choose a divisor of num_attention_heads={heads}"),
        ("hidden_size", cfg.hidden_size % heads == 0 or cfg.head_dim and cfg.model_type != "llama",
         f"use a multiple of num_attention_heads={heads} (model types qwen2 and mistral may set head_dim instead)"),
        ("head_dim", cfg.d_head % 2 == 0, "rotary positions need an even head dimension"),
        ("rope_high_freq_factor", not llama3 or cfg.rope_high_freq_factor > cfg.rope_low_freq_factor,
         "use a value above rope_low_freq_factor"),
        ("model_type", expressible.get(cfg.model_type, False), "it cannot hold these biases and windows: llama biases q, k, "
         "v, o alike (mlp_bias too), no window; qwen2 biases q, k, v, windows layers ≥ max_window_layers; mistral windows all"),
    ]:
        if not ok:
            _refuse(cfg, name, want)


def _refuse(cfg: LlamaConfig, name: str, want: str):
    raise UserError(f"Llama config {name}={getattr(cfg, name)!r} is invalid: {want}")


def check_context(cfg: LlamaConfig, context: int) -> None:
    """A UserError when windows of ``context`` tokens exceed ``cfg.max_position_embeddings``."""
    if context > cfg.max_position_embeddings:
        raise UserError(f"context {context} is longer than the model's max_position_embeddings={cfg.max_position_embeddings}: "
                        f"use --context {cfg.max_position_embeddings} or less")


def init(key: jax.Array, cfg: LlamaConfig) -> dict:
    """Hugging Face ``LlamaPreTrainedModel._init_weights``: embeddings, head and every kernel ~ N(0, 0.02²),
    biases 0, RMSNorm scales 1."""
    V, D, F, L, H = cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.d_head
    Q, K = cfg.num_attention_heads * H, cfg.num_key_value_heads * H
    shapes = {"embed_tokens": (V, D), "q_proj": (L, D, Q), "k_proj": (L, D, K), "v_proj": (L, D, K), "o_proj": (L, Q, D),
              "gate_proj": (L, D, F), "up_proj": (L, D, F), "down_proj": (L, F, D)}
    shapes.update({} if cfg.tie_word_embeddings else {"lm_head": (V, D)})
    # One normal draw carved into the matrices: a draw per matrix compiles several times slower on CPU.
    z = INIT_STD * jax.random.normal(key, (sum(math.prod(s) for s in shapes.values()),), jnp.float32)
    offsets = itertools.accumulate((math.prod(s) for s in shapes.values()), initial=0)
    w = {name: z[start:start + math.prod(shape)].reshape(shape) for (name, shape), start in zip(shapes.items(), offsets)}

    def linear(name, bias):
        return {"kernel": w[name], **({"bias": jnp.zeros(shapes[name][::2], jnp.float32)} if bias else {})}

    attn = {n: linear(n, cfg.o_bias if n == "o_proj" else cfg.qkv_bias) for n in ("q_proj", "k_proj", "v_proj", "o_proj")}
    layers = {"input_layernorm": {"scale": jnp.ones((L, D), jnp.float32)}, "self_attn": attn,
              "post_attention_layernorm": {"scale": jnp.ones((L, D), jnp.float32)},
              "mlp": {n: linear(n, cfg.mlp_bias) for n in ("gate_proj", "up_proj", "down_proj")}}
    params = {"embed_tokens": w["embed_tokens"], "layers": layers, "norm": {"scale": jnp.ones((D,), jnp.float32)}}
    return params if cfg.tie_word_embeddings else {**params, "lm_head": w["lm_head"]}


def apply(params: dict, tokens_BxT: jax.Array, cfg: LlamaConfig, *, compute_dtype=jnp.float32) -> jax.Array:
    """Next-token logits, float32 ``(B, T, V)``; position ``i`` sees tokens ``≤ i`` only (rotary positions extrapolate
    past ``max_position_embeddings`` as in Hugging Face; :func:`check_context` refuses such windows). With
    ``compute_dtype=bfloat16`` the matmul operands are bf16; residual, norms, rotary, softmax and logits float32."""
    return language.head_logits(*features(params, tokens_BxT, cfg, compute_dtype=compute_dtype), compute_dtype)


def features(params: dict, tokens_BxT: jax.Array, cfg: LlamaConfig, *, compute_dtype=jnp.float32) -> tuple[jax.Array, jax.Array]:
    """``(x, W)``: the final normed hidden states ``(B, T, D)`` (float32) and the ``(V, D)`` head, logits ``x · Wᵀ``."""
    x_BxTxD, _ = _blocks(params, tokens_BxT, cfg, compute_dtype, keep=False)
    x_BxTxD = _rms_norm(x_BxTxD, params["norm"], cfg.rms_norm_eps)
    head_VxD = params["embed_tokens"] if cfg.tie_word_embeddings else params["lm_head"]
    return x_BxTxD, head_VxD


def loss(params: dict, tokens_BxT: jax.Array, targets_BxT: jax.Array, cfg: LlamaConfig, *,
         compute_dtype=jnp.float32) -> jax.Array:
    """Mean next-token cross-entropy in nats, ``mean_{b,i} [logsumexp_v z_{biv} − z_{b,i,y_bi}]`` (float32)."""
    return language.head_loss(*features(params, tokens_BxT, cfg, compute_dtype=compute_dtype), targets_BxT, compute_dtype)


def activations(params: dict, tokens_BxT: jax.Array, cfg: LlamaConfig, *, compute_dtype=jnp.float32) -> dict:
    """The intermediates of :func:`apply`'s blocks, stacked over layers by its ``lax.scan``::

        residual        (L, B, T, D)  x^l, the residual stream entering block l (float32)
        attn_out        (L, B, T, D)  Attn(RMS_1(x^l)), the attention branch (float32)
        mlp_hidden      (L, B, T, F)  silu(h W_gate) ⊙ h W_up, h = RMS_2(a), a = x^l + attn_out (compute_dtype)
        mlp_out         (L, B, T, D)  MLP(RMS_2(a)), the MLP branch (float32); x^{l+1} = a + mlp_out
        final_residual     (B, T, D)  x^L, entering the final RMSNorm
    """
    x_BxTxD, per_layer = _blocks(params, tokens_BxT, cfg, compute_dtype, keep=True)
    return {**per_layer, "final_residual": x_BxTxD}


def _blocks(params: dict, tokens_BxT: jax.Array, cfg: LlamaConfig, dtype, keep: bool) -> tuple[jax.Array, dict | None]:
    """``x^L`` from the token embeddings through every block (``lax.scan`` over the stacked layers), and each block's
    intermediates stacked over layers when ``keep``, else None. The sliding window is static (None: none cuts
    anything) unless it differs between layers (Qwen2's ``max_window_layers``), then scanned per layer."""
    T, L = tokens_BxT.shape[1], cfg.num_hidden_layers
    slide = cfg.sliding_window is not None and cfg.sliding_window < T and cfg.max_window_layers < L
    windows_L = np.where(np.arange(L) < cfg.max_window_layers, T, cfg.sliding_window).astype(np.int32) if slide else None
    static = windows_L is None or len(set(windows_L.tolist())) == 1
    freqs_TxK = jnp.arange(T, dtype=jnp.float32)[:, None] * jnp.asarray(inv_freq(cfg))[None, :]
    cos_TxH, sin_TxH = jnp.cos(jnp.concatenate([freqs_TxK] * 2, axis=-1)), jnp.sin(jnp.concatenate([freqs_TxK] * 2, axis=-1))

    def body(x_BxTxD, layer_and_window):
        layer, window = layer_and_window
        window = (None if windows_L is None else int(windows_L[0])) if static else window
        x_BxTxD, parts = language.remat(lambda x, lay: _block(x, lay, cfg, (cos_TxH, sin_TxH, window), dtype))(x_BxTxD, layer)
        return x_BxTxD, parts if keep else None

    xs = (params["layers"], None if static else jnp.asarray(windows_L))
    return jax.lax.scan(body, params["embed_tokens"][tokens_BxT], xs)


def _block(x_BxTxD: jax.Array, layer: dict, cfg: LlamaConfig, position, dtype) -> tuple[jax.Array, dict]:
    """One block, ``a = x + Attn(RMS_1(x))``, ``x' = a + MLP(RMS_2(a))``: ``x'`` and the :func:`activations` parts."""
    attn_BxTxD = _attention(_rms_norm(x_BxTxD, layer["input_layernorm"], cfg.rms_norm_eps), layer["self_attn"], cfg, position,
                            dtype)
    a_BxTxD = x_BxTxD + attn_BxTxD
    h_BxTxD, mlp = _rms_norm(a_BxTxD, layer["post_attention_layernorm"], cfg.rms_norm_eps), layer["mlp"]
    hidden_BxTxF = jax.nn.silu(_dense(h_BxTxD, mlp["gate_proj"], dtype)) * _dense(h_BxTxD, mlp["up_proj"], dtype)
    mlp_BxTxD = _dense(hidden_BxTxF, mlp["down_proj"], dtype).astype(jnp.float32)
    parts = {"residual": x_BxTxD, "attn_out": attn_BxTxD, "mlp_hidden": hidden_BxTxF, "mlp_out": mlp_BxTxD}
    return a_BxTxD + mlp_BxTxD, parts


def _rms_norm(x_BxTxD: jax.Array, norm: dict, eps: float) -> jax.Array:
    """``scale · x / √(mean x² + ε)`` over the last axis, in float32 (``LlamaRMSNorm``)."""
    x_BxTxD = x_BxTxD.astype(jnp.float32)
    return norm["scale"][None, None, :] * (x_BxTxD * jax.lax.rsqrt(jnp.mean(jnp.square(x_BxTxD), axis=-1, keepdims=True) + eps))


def _dense(x_BxTxI: jax.Array, layer: dict, dtype) -> jax.Array:
    """``x @ kernel (+ bias)`` with operands in ``dtype`` (float32 accumulation, result in ``dtype``)."""
    y_BxTxO = language.matmul(x_BxTxI, layer["kernel"], dtype)
    return (y_BxTxO + layer["bias"][None, None, :] if "bias" in layer else y_BxTxO).astype(dtype)


def inv_freq(cfg: LlamaConfig) -> np.ndarray:
    """RoPE's ``θ_k = 1 / theta^(2k/d_h)``, float32 ``(d_h/2,)``, as ``transformers`` computes it (float32
    throughout). "llama3" (``_compute_llama3_parameters``) divides the low frequencies (wavelength
    ``λ = 2π/θ > original_max/low_freq_factor``) by ``factor`` and interpolates up to ``original_max/high_freq_factor``:
    ``θ' = (1 − s) θ/factor + s θ``, ``s = (original_max/λ − low_freq_factor)/(high_freq_factor − low_freq_factor)``."""
    H = cfg.d_head
    theta_K = np.float32(1.0) / np.float32(cfg.rope_theta) ** (np.arange(0, H, 2).astype(np.float32) / np.float32(H))
    if cfg.rope_type == "default":
        return theta_K
    factor, low, high, old = (getattr(cfg, name) for name in _LLAMA3)
    wavelen_K = np.float32(2 * math.pi) / theta_K
    scaled_K = np.where(wavelen_K > old / low, theta_K / np.float32(factor), theta_K)
    smooth_K = (np.float32(old) / wavelen_K - np.float32(low)) / np.float32(high - low)
    smoothed_K = (np.float32(1) - smooth_K) * scaled_K / np.float32(factor) + smooth_K * scaled_K
    medium_K = ~(wavelen_K < old / high) & ~(wavelen_K > old / low)
    return np.where(medium_K, smoothed_K, scaled_K).astype(np.float32)


def _rope(y_BxTxNxH: jax.Array, cos_TxH: jax.Array, sin_TxH: jax.Array, dtype) -> jax.Array:
    """``y cos + rotate_half(y) sin`` in float32, ``rotate_half([y₁, y₂]) = [−y₂, y₁]`` (halves), cast to ``dtype``."""
    y1, y2 = jnp.split(y_BxTxNxH.astype(jnp.float32), 2, axis=-1)
    y_BxTxNxH = jnp.concatenate([y1, y2], axis=-1) * cos_TxH[None, :, None, :]
    return (y_BxTxNxH + jnp.concatenate([-y2, y1], axis=-1) * sin_TxH[None, :, None, :]).astype(dtype)


def _attention(h_BxTxD: jax.Array, attn: dict, cfg: LlamaConfig, position, dtype) -> jax.Array:
    """Causal grouped-query self-attention with rotary q and k (:func:`connect.models.language.causal_attention`, with
    the layer's sliding window), then ``o_proj``."""
    (B, T, _), (cos_TxH, sin_TxH, window) = h_BxTxD.shape, position
    N, K, H = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.d_head
    q_BxTxNxH = _rope(_dense(h_BxTxD, attn["q_proj"], dtype).reshape(B, T, N, H), cos_TxH, sin_TxH, dtype)
    k_BxTxKxH = _rope(_dense(h_BxTxD, attn["k_proj"], dtype).reshape(B, T, K, H), cos_TxH, sin_TxH, dtype)
    v_BxTxKxH = _dense(h_BxTxD, attn["v_proj"], dtype).reshape(B, T, K, H)
    out_BxTxNxH = language.causal_attention(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, dtype, window)
    return _dense(out_BxTxNxH.reshape(B, T, N * H), attn["o_proj"], dtype).astype(jnp.float32)


# --- the family's symmetries (read by connect.symmetry and connect.lm.alignment) ----------------------


def symmetry(cfg: LlamaConfig) -> dict:
    """The permutations that keep every layer's function (git-re-basin's PermutationSpec), per layer, in this order:
    ``mlp`` the ``F`` units (``gate_proj``, ``up_proj`` columns and biases, ``down_proj`` rows; silu and ⊙ act
    elementwise); ``kv_heads`` the ``N_kv`` key/value heads (``d_h`` columns of k, v) with the ``n_rep`` query heads
    reading each (``n_rep·d_h`` columns of q, rows of ``o_proj``); ``q_heads`` (``n_rep > 1``) the query heads within
    each of the ``N_kv`` groups; rotary positions fix the order inside a head. Leaf -> (axis, fused[, block])."""
    H, G, A = cfg.d_head, cfg.num_attention_heads // cfg.num_key_value_heads, ("layers", "self_attn")
    gate_up = {("layers", "mlp", n, leaf): (-1, 1) for n in ("gate_proj", "up_proj") for leaf in ("kernel", "bias")}
    kv = {(*A, n, leaf): (-1, 1) for n in ("k_proj", "v_proj") for leaf in ("kernel", "bias")}
    q_o = {(*A, "q_proj", "kernel"): (-1, 1), (*A, "q_proj", "bias"): (-1, 1), (*A, "o_proj", "kernel"): (-2, 1)}
    out = {"mlp": {"leaves": {**gate_up, ("layers", "mlp", "down_proj", "kernel"): (-2, 1)}, "block": 1, "stacked": True},
           "kv_heads": {"leaves": {**kv, **{path: (axis, 1, G * H) for path, (axis, _) in q_o.items()}}, "block": H,
                        "stacked": True}}
    if G > 1:
        out["q_heads"] = {"leaves": q_o, "block": H, "groups": cfg.num_key_value_heads, "stacked": True}
    return out


#: The residual stream, for rotations (:mod:`connect.lm.alignment`), as :data:`connect.models.gpt2.RESIDUAL`; RMSNorm
#: (``rms``): any rotation of the residual stream keeps the function.
RESIDUAL = {"layers": "layers", "embeddings": ("embed_tokens",), "tied": "embed_tokens", "head": "lm_head", "final_norm": "norm",
            "readers": {**{("self_attn", n): "input_layernorm" for n in ("q_proj", "k_proj", "v_proj")},
                        **{("mlp", n): "post_attention_layernorm" for n in ("gate_proj", "up_proj")}},
            "writers": (("self_attn", "o_proj"), ("mlp", "down_proj")), "norm": "rms"}
RESIDUAL_READERS, RESIDUAL_WRITERS = RESIDUAL["readers"], RESIDUAL["writers"]


# --- the family's weight matrices (one naming for spectra, constraint norms and Muon's split) -----------

#: Per-layer matrices: name suffix -> leaf path under ``layers`` (q, k, v, gate and up are separate kernels).
LAYER_MATRICES: dict[str, tuple[str, ...]] = {f"{m}.{n}": (m, n, "kernel") for m, names in (
    ("self_attn", ("q_proj", "k_proj", "v_proj", "o_proj")), ("mlp", ("gate_proj", "up_proj", "down_proj"))) for n in names}
#: Muon's split, from the same naming: leaf path -> matrices fused along its LAST axis (one each); the rest AdamW.
MUON_MATRICES: dict[tuple[str, ...], int] = {("layers", *path): 1 for path in LAYER_MATRICES.values()}


def matrix_names(cfg: LlamaConfig) -> list[str]:
    """Every weight matrix by its Hugging Face name without ``model.``: per layer ``layers.{l}.self_attn.q_proj`` (k, v,
    o) and ``layers.{l}.mlp.gate_proj`` (up, down), then ``embed_tokens`` and ``lm_head`` (untied heads only)."""
    names = [f"layers.{layer}.{m}" for layer in range(cfg.num_hidden_layers) for m in LAYER_MATRICES]
    return names + ["embed_tokens"] + ([] if cfg.tie_word_embeddings else ["lm_head"])


def hidden_matrix_names(cfg: LlamaConfig) -> tuple[str, ...]:
    """The matrices Muon orthogonalises (:data:`MUON_MATRICES`): every ``layers.*`` matrix."""
    return tuple(n for n in matrix_names(cfg) if n.startswith("layers."))


def matrices(params: dict, cfg: LlamaConfig, names=None) -> dict:
    """``{name: W}`` for the named matrices (default all, :func:`matrix_names`), each ``(…, fan_out, fan_in)`` as
    ``nn.Linear.weight`` (embeddings, head ``(V, D)``), leading axes of the leaves kept (a t axis); unknown: UserError."""
    out = {}
    for name in checked_matrix_names(cfg, names):
        if name.startswith("layers."):
            _, layer, suffix = name.split(".", 2)
            out[name] = jnp.swapaxes(_leaf(params, ("layers", *LAYER_MATRICES[suffix]))[..., int(layer), :, :], -1, -2)
        else:
            out[name] = _leaf(params, (name,))
    return out


def checked_matrix_names(cfg: LlamaConfig, names=None) -> list[str]:
    """``names`` (default: all of :func:`matrix_names`) after checking this config has each of them."""
    return language.checked_names(matrix_names(cfg), names, cfg.num_hidden_layers, cfg.tie_word_embeddings)


def _leaf(node, path: tuple[str, ...]):
    for key in path:
        if not isinstance(node, dict) or key not in node:
            raise UserError(f"the checkpoint has no {'/'.join(path)}: pass a Llama checkpoint of this config "
                            "(connect train-lm or Hugging Face LlamaForCausalLM / Qwen2ForCausalLM / MistralForCausalLM)")
        node = node[key]
    return node
