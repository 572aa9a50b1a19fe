"""GPT-NeoX / Pythia (Black et al. 2022; Biderman et al. 2023), exactly Hugging Face ``GPTNeoXForCausalLM``'s
eval-mode arithmetic. With LayerNorm ``LN`` (biased variance, ``ε = layer_norm_eps``), ``d_h = D / N``::

    x⁰_i = embed_in[t_i];   logits = LN_f(x^L) · Wᵀ,   W = embed_out (untied) or embed_in (tied)
    parallel:   x^{l+1} = x^l + Attn(LN_1(x^l)) + MLP(LN_2(x^l))                  (use_parallel_residual)
    sequential: a = x^l + Attn(LN_1(x^l)),  x^{l+1} = a + MLP(LN_2(a))
    MLP(x)  = act(x W_{h→4h} + b) W_{4h→h} + b,   act: erf GELU ("gelu") or its tanh form
    Attn(x) = concat_n softmax(q̃_n k̃_nᵀ / √d_h + causal mask) v_n · W_o + b_o,
    [q_n | k_n | v_n] = (x W_qkv + b_qkv)[n·3d_h : (n+1)·3d_h]     per head, interleaved (GPTNeoXAttention)

Partial rotary (Su et al. 2021, RoFormer): the first ``R = int(d_h · rotary_pct)`` dims of each q and k head
rotate, the rest pass: ``q̃[:R] = q[:R] cos θ_i + rotate_half(q[:R]) sin θ_i``, ``rotate_half([u | w]) = [−w | u]``,
``θ_i = i · [ω | ω]``, ``ω_j = base^(−2j/R)`` for ``j < R/2``, ``base = rotary_emb_base`` (``rope_theta``).

Parameters: a plain dict pytree, per-layer arrays stacked on a leading axis ``L`` (run by ``lax.scan``), kernels
``(in, out)`` (the transpose of ``nn.Linear.weight``), attention biases only with ``attention_bias``::

    {"embed_in": (V, D),
     "layers": {"input_layernorm": {"scale": (L, D), "bias": (L, D)}, "post_attention_layernorm": {...},
                "attention": {"query_key_value": {"kernel": (L, D, 3D), "bias": (L, 3D)},   # per head q|k|v
                              "dense": {"kernel": (L, D, D), "bias": (L, D)}},
                "mlp": {"dense_h_to_4h": {"kernel": (L, D, F), "bias": (L, F)},
                        "dense_4h_to_h": {"kernel": (L, F, D), "bias": (L, D)}}},
     "final_layer_norm": {"scale": (D,), "bias": (D,)},
     "embed_out": (V, D)}        # only when tie_word_embeddings is False; Hugging Face I/O: connect.lm.huggingface
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math

import jax
import jax.numpy as jnp

from connect.errors import UserError
from connect.models import language

#: The family's name, recorded as ``"model"`` in its checkpoints (:mod:`connect.models`).
FAMILY = "gpt_neox"
#: ``hidden_act`` values implemented: erf GELU, and the tanh approximation under its three Hugging Face names.
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast")


@dataclasses.dataclass(frozen=True)
class GPTNeoXConfig:
    """Architecture of a GPT-NeoX, fields named as Hugging Face's ``GPTNeoXConfig``; stored in every checkpoint
    (``F = intermediate_size`` is the MLP width)."""

    vocab_size: int
    max_position_embeddings: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    rotary_pct: float = 0.25
    rotary_emb_base: float = 10000.0
    use_parallel_residual: bool = True
    attention_bias: bool = True
    tie_word_embeddings: bool = False
    layer_norm_eps: float = 1e-5
    hidden_act: str = "gelu"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    d_model = property(lambda self: self.hidden_size, doc="Width of the residual stream.")
    n_layers = property(lambda self: self.num_hidden_layers)
    context_limit = property(lambda self: self.max_position_embeddings, doc="The longest window (max positions).")
    head_dim = property(lambda self: self.hidden_size // self.num_attention_heads)
    rotary_dim = property(lambda self: int(self.head_dim * self.rotary_pct),
                          doc="``R = int(d_h · rotary_pct)``, rotated dims per head (``GPTNeoXAttention.rotary_ndims``).")


_PYTHIA = dict(vocab_size=50304, max_position_embeddings=2048, rotary_pct=0.25, use_parallel_residual=True)
#: Named configurations; ``pythia-*`` are EleutherAI's Pythia models (Biderman et al. 2023).
CONFIGS: dict[str, GPTNeoXConfig] = {
    "tiny": GPTNeoXConfig(vocab_size=256, max_position_embeddings=64, hidden_size=64, num_hidden_layers=2,
                          num_attention_heads=4, intermediate_size=256),
    "pythia-70m": GPTNeoXConfig(**_PYTHIA, hidden_size=512, num_hidden_layers=6, num_attention_heads=8, intermediate_size=2048),
    "pythia-160m": GPTNeoXConfig(**_PYTHIA, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}
#: Standard deviation of the normal init (Hugging Face ``initializer_range``).
INIT_STD = 0.02


def config(name_or_cfg: str | GPTNeoXConfig, **overrides) -> GPTNeoXConfig:
    """A :class:`GPTNeoXConfig` by name (see :data:`CONFIGS`) or as given, with fields overridden and checked."""
    cfg = name_or_cfg if isinstance(name_or_cfg, GPTNeoXConfig) else CONFIGS.get(str(name_or_cfg))
    if cfg is None:
        raise UserError(f"unknown GPT-NeoX config {name_or_cfg!r}: use one of {', '.join(sorted(CONFIGS))}")
    fields = {f.name for f in dataclasses.fields(GPTNeoXConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise UserError(f"unknown GPT-NeoX config field(s) {', '.join(unknown)}: use fields among {', '.join(sorted(fields))}")
    cfg = dataclasses.replace(cfg, **overrides)
    _check(cfg)
    return cfg


def _check(cfg: GPTNeoXConfig) -> None:
    """UserError (one line) for the first invalid field of ``cfg``."""
    def number(v):
        return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)

    wants = {name: ("a positive integer", lambda v: not isinstance(v, bool) and isinstance(v, int) and v >= 1)
             for name in ("vocab_size", "max_position_embeddings", "hidden_size", "num_hidden_layers",
                          "num_attention_heads", "intermediate_size")}
    wants.update({name: ("true or false", lambda v: isinstance(v, bool))
                  for name in ("use_parallel_residual", "attention_bias", "tie_word_embeddings")})
    wants.update(rotary_pct=("a fraction in [0, 1]", lambda v: number(v) and 0 <= v <= 1),
                 rotary_emb_base=("a finite positive number", lambda v: number(v) and v > 0),
                 layer_norm_eps=("a finite positive number", lambda v: number(v) and v > 0),
                 hidden_act=(f"one of {', '.join(ACTIVATIONS)}", lambda v: isinstance(v, str) and v in ACTIVATIONS))
    for name, (want, ok) in wants.items():
        if not ok(getattr(cfg, name)):
            raise UserError(f"GPT-NeoX config {name}={getattr(cfg, name)!r} is invalid: use {want}")
    if cfg.hidden_size % cfg.num_attention_heads:
        raise UserError(f"GPT-NeoX config hidden_size={cfg.hidden_size} is not divisible by num_attention_heads="
                        f"{cfg.num_attention_heads}: choose num_attention_heads dividing hidden_size")
    if cfg.rotary_dim % 2:
        raise UserError(f"GPT-NeoX config rotary_pct={cfg.rotary_pct!r} is invalid: use a fraction whose "
                        f"int(head_dim·rotary_pct) is even (head_dim {cfg.head_dim}, rotary dims {cfg.rotary_dim})")


def check_context(cfg: GPTNeoXConfig, context: int) -> None:
    """A UserError when windows of ``context`` tokens exceed ``cfg.max_position_embeddings``."""
    if context > cfg.max_position_embeddings:
        raise UserError(f"context {context} is longer than the model's max_position_embeddings="
                        f"{cfg.max_position_embeddings}: use --context {cfg.max_position_embeddings} or less")


def init(key: jax.Array, cfg: GPTNeoXConfig) -> dict:
    """Hugging Face's ``_init_weights`` for GPT-NeoX: embeddings, head and every kernel ~ N(0, 0.02²) (no depth
    scaling), biases 0, LayerNorm scale 1 and bias 0."""
    V, D, L, F = cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    # One normal draw carved into the matrices: a draw per matrix compiles several times slower on CPU.
    shapes = {"embed_in": (V, D), "qkv": (L, D, 3 * D), "dense": (L, D, D), "h_to_4h": (L, D, F), "4h_to_h": (L, F, D)}
    if not cfg.tie_word_embeddings:
        shapes["embed_out"] = (V, D)
    z = INIT_STD * jax.random.normal(key, (sum(math.prod(s) for s in shapes.values()),), jnp.float32)
    offsets = itertools.accumulate((math.prod(s) for s in shapes.values()), initial=0)
    w = {name: z[start:start + math.prod(shape)].reshape(shape) for (name, shape), start in zip(shapes.items(), offsets)}

    def layer_norm(*lead):
        return {"scale": jnp.ones((*lead, D), jnp.float32), "bias": jnp.zeros((*lead, D), jnp.float32)}

    def linear(kernel, bias: bool):
        return {"kernel": kernel, "bias": jnp.zeros(kernel.shape[:-2] + kernel.shape[-1:], jnp.float32)} if bias else {"kernel": kernel}

    params = {"embed_in": w["embed_in"], "final_layer_norm": layer_norm(),
              "layers": {"input_layernorm": layer_norm(L), "post_attention_layernorm": layer_norm(L),
                         "attention": {"query_key_value": linear(w["qkv"], cfg.attention_bias),
                                       "dense": linear(w["dense"], cfg.attention_bias)},
                         "mlp": {"dense_h_to_4h": linear(w["h_to_4h"], True), "dense_4h_to_h": linear(w["4h_to_h"], True)}}}
    if not cfg.tie_word_embeddings:
        params["embed_out"] = w["embed_out"]
    return params


def apply(params: dict, tokens_BxT: jax.Array, cfg: GPTNeoXConfig, *, compute_dtype=jnp.float32) -> jax.Array:
    """Next-token logits, float32 ``(B, T, V)``; position ``i`` sees tokens ``≤ i`` only.

    With ``compute_dtype=bfloat16`` the matmul operands (params and activations) are cast to bf16; the residual
    stream, LayerNorm statistics, rotary angles, softmax and logits stay float32.
    """
    return language.head_logits(*features(params, tokens_BxT, cfg, compute_dtype=compute_dtype), compute_dtype)


def features(params: dict, tokens_BxT: jax.Array, cfg: GPTNeoXConfig, *, compute_dtype=jnp.float32) -> tuple[jax.Array, jax.Array]:
    """``(x, W)``: the final normed hidden states ``(B, T, D)`` (float32) and the ``(V, D)`` head, logits ``x · Wᵀ``."""
    x_BxTxD, _ = _blocks(params, tokens_BxT, cfg, compute_dtype, keep=False)
    x_BxTxD = _layer_norm(x_BxTxD, params["final_layer_norm"], cfg.layer_norm_eps)
    head_VxD = params["embed_in"] if cfg.tie_word_embeddings else params["embed_out"]
    return x_BxTxD, head_VxD


def loss(params: dict, tokens_BxT: jax.Array, targets_BxT: jax.Array, cfg: GPTNeoXConfig, *,
         compute_dtype=jnp.float32) -> jax.Array:
    """Mean next-token cross-entropy in nats, ``mean_{b,i} [logsumexp_v z_{biv} − z_{b,i,y_bi}]`` (float32)."""
    return language.head_loss(*features(params, tokens_BxT, cfg, compute_dtype=compute_dtype), targets_BxT, compute_dtype)


def activations(params: dict, tokens_BxT: jax.Array, cfg: GPTNeoXConfig, *, compute_dtype=jnp.float32) -> dict:
    """The intermediates of :func:`apply`'s blocks (the same block function), stacked over layers by ``lax.scan``::

        residual        (L, B, T, D)  x^l, the residual stream entering block l (float32)
        attn_out        (L, B, T, D)  Attn(LN_1(x^l)), the attention branch (float32)
        mlp_hidden      (L, B, T, F)  act(LN_2(u) W_{h→4h} + b), u = x^l (parallel) or x^l + attn_out (compute_dtype)
        mlp_out         (L, B, T, D)  MLP(LN_2(u)), the MLP branch (float32); x^{l+1} = x^l + attn_out + mlp_out
        final_residual     (B, T, D)  x^L, entering LN_f
    """
    x_BxTxD, per_layer = _blocks(params, tokens_BxT, cfg, compute_dtype, keep=True)
    return {**per_layer, "final_residual": x_BxTxD}


def _blocks(params: dict, tokens_BxT: jax.Array, cfg: GPTNeoXConfig, compute_dtype, keep: bool) -> tuple[jax.Array, dict | None]:
    """``x^L`` from the token embeddings through every block (``lax.scan`` over the stacked layers), and each
    block's intermediates (:func:`_block`) stacked over layers when ``keep``, else None."""
    B, T = tokens_BxT.shape
    check_context(cfg, T)
    cos_TxR, sin_TxR = _rotary_angles(T, cfg)
    x_BxTxD = params["embed_in"][tokens_BxT].astype(jnp.float32)

    def body(x_BxTxD, layer):
        x_BxTxD, parts = language.remat(lambda x, lay: _block(x, lay, cfg, cos_TxR, sin_TxR, compute_dtype))(x_BxTxD, layer)
        return x_BxTxD, parts if keep else None

    return jax.lax.scan(body, x_BxTxD, params["layers"])


def _block(x_BxTxD, layer: dict, cfg: GPTNeoXConfig, cos_TxR, sin_TxR, dtype) -> tuple[jax.Array, dict]:
    """One block (``GPTNeoXLayer``), parallel or sequential residual: ``x'`` and the intermediates named as in
    :func:`activations`."""
    h_BxTxD = _layer_norm(x_BxTxD, layer["input_layernorm"], cfg.layer_norm_eps)
    attn_BxTxD = _attention(h_BxTxD, layer["attention"], cfg, cos_TxR, sin_TxR, dtype)
    u_BxTxD = x_BxTxD if cfg.use_parallel_residual else x_BxTxD + attn_BxTxD
    g_BxTxD = _layer_norm(u_BxTxD, layer["post_attention_layernorm"], cfg.layer_norm_eps)
    hidden_BxTxF, mlp_BxTxD = _mlp(g_BxTxD, layer["mlp"], cfg.hidden_act, dtype)
    parts = {"residual": x_BxTxD, "attn_out": attn_BxTxD, "mlp_hidden": hidden_BxTxF, "mlp_out": mlp_BxTxD}
    if cfg.use_parallel_residual:
        return mlp_BxTxD + attn_BxTxD + x_BxTxD, parts  # transformers' order of the sum
    return mlp_BxTxD + u_BxTxD, parts


def _layer_norm(x_BxTxD: jax.Array, ln: dict, eps: float) -> jax.Array:
    """``(x − μ)/√(σ² + ε) · scale + bias`` over the last axis, in float32 (biased σ², as torch)."""
    x_BxTxD = x_BxTxD.astype(jnp.float32)
    mean_BxTx1 = jnp.mean(x_BxTxD, axis=-1, keepdims=True)
    var_BxTx1 = jnp.mean(jnp.square(x_BxTxD - mean_BxTx1), axis=-1, keepdims=True)
    y_BxTxD = (x_BxTxD - mean_BxTx1) * jax.lax.rsqrt(var_BxTx1 + eps)
    return y_BxTxD * ln["scale"][None, None, :] + ln["bias"][None, None, :]


def _dense(x_BxTxI: jax.Array, layer: dict, dtype) -> jax.Array:
    """``x @ kernel (+ bias)`` with operands in ``dtype`` (float32 accumulation, result in ``dtype``)."""
    y_BxTxO = language.matmul(x_BxTxI, layer["kernel"], dtype)
    if "bias" in layer:
        y_BxTxO = y_BxTxO + layer["bias"][None, None, :]
    return y_BxTxO.astype(dtype)


def _rotary_angles(T: int, cfg: GPTNeoXConfig) -> tuple[jax.Array, jax.Array]:
    """``cos θ_i`` and ``sin θ_i``, ``(T, R)``, ``θ_i = i·[ω | ω]``, ``ω_j = base^(−2j/R)`` (float32, as
    ``GPTNeoXRotaryEmbedding``: ``inv_freq = 1 / base^(arange(0, R, 2)/R)``)."""
    R = cfg.rotary_dim
    inv_freq_R2 = 1.0 / (jnp.float32(cfg.rotary_emb_base) ** (jnp.arange(0, R, 2, dtype=jnp.float32) / R))
    freqs_TxR2 = jnp.arange(T, dtype=jnp.float32)[:, None] * inv_freq_R2[None, :]
    emb_TxR = jnp.concatenate([freqs_TxR2, freqs_TxR2], axis=-1)
    return jnp.cos(emb_TxR), jnp.sin(emb_TxR)


def _rotate(x_BxTxNxH: jax.Array, cos_TxR: jax.Array, sin_TxR: jax.Array) -> jax.Array:
    """Partial rotary: ``[x_rot cos + rotate_half(x_rot) sin | x_pass]`` in float32, ``x_rot = x[..., :R]``."""
    R = cos_TxR.shape[-1]
    x_BxTxNxH = x_BxTxNxH.astype(jnp.float32)
    rot, rest = x_BxTxNxH[..., :R], x_BxTxNxH[..., R:]
    half = jnp.concatenate([-rot[..., R // 2:], rot[..., :R // 2]], axis=-1)
    rot = rot * cos_TxR[None, :, None, :] + half * sin_TxR[None, :, None, :]
    return jnp.concatenate([rot, rest], axis=-1)


def _attention(h_BxTxD: jax.Array, attn: dict, cfg: GPTNeoXConfig, cos_TxR, sin_TxR, dtype) -> jax.Array:
    """Causal multi-head self-attention with partial rotary on q and k; the fused output viewed
    ``(B, T, N, 3·d_h)``, per head ``[q | k | v]`` (``GPTNeoXAttention``)."""
    B, T, D = h_BxTxD.shape
    N = cfg.num_attention_heads
    qkv_BxTxNx3H = _dense(h_BxTxD, attn["query_key_value"], dtype).reshape(B, T, N, 3 * (D // N))
    q_BxTxNxH, k_BxTxNxH, v_BxTxNxH = jnp.split(qkv_BxTxNx3H, 3, axis=-1)
    q_BxTxNxH = _rotate(q_BxTxNxH, cos_TxR, sin_TxR).astype(dtype)
    k_BxTxNxH = _rotate(k_BxTxNxH, cos_TxR, sin_TxR).astype(dtype)
    out_BxTxNxH = language.causal_attention(q_BxTxNxH, k_BxTxNxH, v_BxTxNxH, dtype)
    return _dense(out_BxTxNxH.reshape(B, T, D), attn["dense"], dtype).astype(jnp.float32)


def _mlp(h_BxTxD: jax.Array, mlp: dict, act: str, dtype) -> tuple[jax.Array, jax.Array]:
    """The hidden activation ``a = act(h W_{h→4h} + b)`` (in ``dtype``) and the output ``a W_{4h→h} + b`` (float32);
    ``gelu`` is erf GELU, the others ``½x(1 + tanh(√(2/π)(x + 0.044715x³)))`` (Hendrycks & Gimpel 2016), the
    same formula as transformers' ``NewGELUActivation``, ``GELUTanh`` and ``FastGELUActivation``."""
    a_BxTxF = jax.nn.gelu(_dense(h_BxTxD, mlp["dense_h_to_4h"], dtype), approximate=act != "gelu")
    return a_BxTxF, _dense(a_BxTxF, mlp["dense_4h_to_h"], dtype).astype(jnp.float32)


# --- the family's symmetries (read by connect.symmetry and connect.lm.alignment) ----------------------

def symmetry(cfg: GPTNeoXConfig) -> dict:
    """The permutations that leave every layer's function unchanged (git-re-basin's PermutationSpec), per layer:
    ``mlp`` reorders the ``F`` units (``dense_h_to_4h`` columns and bias, ``dense_4h_to_h`` rows; GELU acts
    elementwise); ``heads`` the ``N`` heads, whose rotary is the same for every head: on ``query_key_value``
    (columns and bias) a head is one block of ``3·d_h`` entries ``[q_n | k_n | v_n]`` (the per-leaf block
    override), on ``attention.dense`` a block of ``d_h`` rows. Leaf path -> (axis, fused[, block])."""
    d_h, qkv, mlp = cfg.head_dim, ("layers", "attention", "query_key_value"), ("layers", "mlp")
    return {
        "mlp": {"leaves": {(*mlp, "dense_h_to_4h", "kernel"): (-1, 1), (*mlp, "dense_h_to_4h", "bias"): (-1, 1),
                           (*mlp, "dense_4h_to_h", "kernel"): (-2, 1)}, "block": 1, "stacked": True},
        "heads": {"leaves": {(*qkv, "kernel"): (-1, 1, 3 * d_h), (*qkv, "bias"): (-1, 1, 3 * d_h),
                             ("layers", "attention", "dense", "kernel"): (-2, 1)}, "block": d_h, "stacked": True},
    }


#: The residual stream, for rotations (:mod:`connect.lm.alignment`), as ``gpt2.RESIDUAL``: stacked layers' key,
#: embeddings ``(rows, D)``, tied embedding, untied head, final norm, the residual-reading layers (kernel ``(L, D, O)``)
#: with the norm before each (parallel or sequential, each reads a residual), the residual-writing layers and the
#: norm's kind (``layer``: LayerNorm, rotations must fix 𝟙).
RESIDUAL = {"layers": "layers", "embeddings": ("embed_in",), "tied": "embed_in", "head": "embed_out",
            "final_norm": "final_layer_norm",
            "readers": {("attention", "query_key_value"): "input_layernorm", ("mlp", "dense_h_to_4h"): "post_attention_layernorm"},
            "writers": (("attention", "dense"), ("mlp", "dense_4h_to_h")), "norm": "layer"}
RESIDUAL_READERS, RESIDUAL_WRITERS = RESIDUAL["readers"], RESIDUAL["writers"]


# --- the family's weight matrices (one naming for spectra, constraint norms and Muon's split) -----------
#: Per-layer matrices: name suffix -> (kernel path under ``layers``, part of each head's ``[q | k | v]`` or None).
#: ``query``/``key``/``value`` are cut out of the per-head interleaved ``query_key_value`` kernel: columns
#: ``n·3d_h + j·d_h … + d_h`` for every head ``n`` (``j`` = 0, 1, 2), in head order.
_QKV = ("attention", "query_key_value", "kernel")
LAYER_MATRICES: dict[str, tuple[tuple[str, ...], int | None]] = {
    "attention.query": (_QKV, 0), "attention.key": (_QKV, 1), "attention.value": (_QKV, 2),
    "attention.dense": (("attention", "dense", "kernel"), None), "mlp.dense_h_to_4h": (("mlp", "dense_h_to_4h", "kernel"), None),
    "mlp.dense_4h_to_h": (("mlp", "dense_4h_to_h", "kernel"), None)}
#: Muon's split: leaf path -> matrices fused along its LAST axis in equal contiguous blocks. ``query_key_value``
#: interleaves q, k, v per head (``[q_0 k_0 v_0 | q_1 k_1 v_1 | …]``): three contiguous blocks would mix heads of q,
#: k and v, so it is orthogonalised as ONE ``D x 3D`` matrix. Every other leaf goes to AdamW.
MUON_MATRICES: dict[tuple[str, ...], int] = {("layers", *path): 1 for path, _ in LAYER_MATRICES.values()}


def matrix_names(cfg: GPTNeoXConfig) -> list[str]:
    """Every weight matrix by its Hugging Face name: per layer ``layers.{l}.attention.query``, ``.key``, ``.value``
    (cut out of ``query_key_value``), ``layers.{l}.attention.dense``, ``layers.{l}.mlp.dense_h_to_4h``,
    ``layers.{l}.mlp.dense_4h_to_h``; then ``embed_in`` and ``embed_out`` (untied heads only)."""
    names = [f"layers.{layer}.{m}" for layer in range(cfg.num_hidden_layers) for m in LAYER_MATRICES]
    return names + ["embed_in"] + ([] if cfg.tie_word_embeddings else ["embed_out"])


def hidden_matrix_names(cfg: GPTNeoXConfig) -> tuple[str, ...]:
    """The per-layer matrices, every ``layers.*`` name (q, k and v separately; Muon itself orthogonalises the
    fused ``query_key_value``, see :data:`MUON_MATRICES`)."""
    return tuple(n for n in matrix_names(cfg) if n.startswith("layers."))


def matrices(params: dict, cfg: GPTNeoXConfig, names=None) -> dict:
    """``{name: W}`` for the named matrices (default all, :func:`matrix_names`), each ``(…, fan_out, fan_in)``
    (the stored ``(in, out)`` kernels transposed, i.e. ``nn.Linear.weight``; embeddings and head ``(V, D)`` as
    stored), any leading axes of the leaves kept (e.g. a t axis). A name this config lacks is a UserError."""
    N, d_h = cfg.num_attention_heads, cfg.head_dim
    out = {}
    for name in checked_matrix_names(cfg, names):
        if name.startswith("layers."):
            _, layer, suffix = name.split(".", 2)
            path, part = LAYER_MATRICES[suffix]
            w = _leaf(params, ("layers",) + path)[..., int(layer), :, :]
            if part is not None:
                w = w.reshape(*w.shape[:-1], N, 3, d_h)[..., part, :].reshape(*w.shape[:-1], N * d_h)
            out[name] = jnp.swapaxes(w, -1, -2)
        else:
            out[name] = _leaf(params, (name,))
    return out


def checked_matrix_names(cfg: GPTNeoXConfig, names=None) -> list[str]:
    """``names`` (default: all of :func:`matrix_names`) after checking this config has each of them."""
    return language.checked_names(matrix_names(cfg), names, cfg.num_hidden_layers, cfg.tie_word_embeddings)


def _leaf(params, path: tuple[str, ...]):
    try:
        return functools.reduce(lambda node, key: node[key], path, params)
    except (KeyError, TypeError, IndexError):
        raise UserError(f"the checkpoint has no {'/'.join(path)}: pass a GPT-NeoX checkpoint of this config "
                        "(connect train-lm or Hugging Face GPTNeoXForCausalLM)") from None
