"""GPT-2 (Radford et al. 2019) with exactly Hugging Face ``GPT2LMHeadModel``'s eval-mode arithmetic.

For tokens ``t_1..t_T`` (Vaswani et al. 2017, with GPT-2's pre-LayerNorm and final LayerNorm)::

    x⁰_i   = wte[t_i] + wpe[i]                                   learned positions
    a      = x^l + Attn(LN_1(x^l)),   x^{l+1} = a + MLP(LN_2(a))   for l = 0..L−1
    logits = LN_f(x^L) · Wᵀ,   W = wte (tied) or lm_head (untied)

    LN(x)    = (x − mean x) / sqrt(var x + ε) · scale + bias      biased variance, ε = 1e-5
    MLP(x)   = gelu_new(x W_fc + b_fc) W_proj + b_proj
    gelu_new(x) = ½ x (1 + tanh(√(2/π) (x + 0.044715 x³)))       (Hendrycks & Gimpel 2016, tanh form)
    Attn(x)  = concat_n softmax(q_n k_nᵀ / √d_h + causal mask) v_n · W_o + b_o,
               [q | k | v] = x W_qkv + b_qkv,  d_h = D / n_head

Parameters are a plain dict pytree; the per-layer arrays are stacked on a leading axis ``L``
so that :func:`apply` runs the blocks with ``lax.scan``. Kernels are stored ``(in, out)``
like Hugging Face's ``Conv1D``, so every layer computes ``x @ kernel + bias``::

    {"wte": (V, D), "wpe": (P, D),
     "h": {"ln_1": {"scale": (L, D), "bias": (L, D)},
           "attn": {"c_attn": {"kernel": (L, D, 3D), "bias": (L, 3D)},   # q | k | v on the last axis
                    "c_proj": {"kernel": (L, D, D),  "bias": (L, D)}},
           "ln_2": {"scale": (L, D), "bias": (L, D)},
           "mlp":  {"c_fc":   {"kernel": (L, D, F), "bias": (L, F)},
                    "c_proj": {"kernel": (L, F, D), "bias": (L, D)}}},
     "ln_f": {"scale": (D,), "bias": (D,)},
     "lm_head": (V, D)}          # only when tie_word_embeddings is False

:mod:`connect.lm.huggingface` converts this pytree to and from Hugging Face checkpoints.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp

from connect.errors import UserError
from connect.models import language

#: The family's name, recorded as ``"model"`` in its checkpoints (:mod:`connect.models`).
FAMILY = "gpt2"

@dataclasses.dataclass(frozen=True)
class GPT2Config:
    """Architecture of a GPT-2; stored in every checkpoint (``F = n_inner`` is the MLP width)."""

    vocab_size: int
    n_positions: int
    n_embd: int
    n_layer: int
    n_head: int
    n_inner: int
    tie_word_embeddings: bool = True
    layer_norm_epsilon: float = 1e-5

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def d_model(self) -> int:
        """Width of the residual stream."""
        return self.n_embd

    @property
    def n_layers(self) -> int:
        return self.n_layer

    @property
    def context_limit(self) -> int:
        """The longest window the model reads (learned positions)."""
        return self.n_positions


#: Named configurations. ``seed-paper`` is the model of Zhang et al., "Optimizer-Induced Mode
#: Connectivity" (arXiv 2605.09991), §5; ``gpt2`` is the 124M model of Radford et al. 2019.
CONFIGS: dict[str, GPT2Config] = {
    "tiny": GPT2Config(vocab_size=256, n_positions=64, n_embd=64, n_layer=2, n_head=4, n_inner=256,
                       tie_word_embeddings=False),
    "seed-paper": GPT2Config(vocab_size=50257, n_positions=256, n_embd=256, n_layer=6, n_head=4, n_inner=1024,
                             tie_word_embeddings=False),
    "gpt2": GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12, n_inner=3072,
                       tie_word_embeddings=True),
}


#: Standard deviation of the normal init (GPT-2 / nanoGPT / Hugging Face ``initializer_range``).
INIT_STD = 0.02


def config(name_or_cfg: str | GPT2Config, **overrides) -> GPT2Config:
    """A :class:`GPT2Config` by name (see :data:`CONFIGS`) or as given, with fields overridden and checked."""
    if isinstance(name_or_cfg, GPT2Config):
        cfg = name_or_cfg
    elif name_or_cfg in CONFIGS:
        cfg = CONFIGS[name_or_cfg]
    else:
        raise UserError(f"unknown GPT-2 config {name_or_cfg!r}: use one of {', '.join(sorted(CONFIGS))}")
    fields = {f.name for f in dataclasses.fields(GPT2Config)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise UserError(f"unknown GPT-2 config field(s) {', '.join(unknown)}: use fields among {', '.join(sorted(fields))}")
    cfg = dataclasses.replace(cfg, **overrides)
    for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"GPT-2 config {name}={value!r} is invalid: use a positive integer")
    if cfg.n_embd % cfg.n_head:
        raise UserError(f"GPT-2 config n_embd={cfg.n_embd} is not divisible by n_head={cfg.n_head}: "
                        "choose n_head dividing n_embd")
    if not cfg.layer_norm_epsilon > 0:
        raise UserError(f"GPT-2 config layer_norm_epsilon={cfg.layer_norm_epsilon!r} is invalid: use a positive number")
    return cfg


def check_context(cfg: GPT2Config, context: int) -> None:
    """A UserError when windows of ``context`` tokens do not fit ``cfg.n_positions`` (learned positions)."""
    if context > cfg.n_positions:
        raise UserError(f"context {context} is longer than the model's n_positions={cfg.n_positions}: "
                        f"use --context {cfg.n_positions} or less")


def init(key: jax.Array, cfg: GPT2Config) -> dict:
    """GPT-2 init (Radford et al. 2019, §2.3; as nanoGPT and Hugging Face).

    ``wte``, ``wpe``, ``lm_head`` and kernels ~ N(0, 0.02²); the residual projections
    (``attn.c_proj``, ``mlp.c_proj``) ~ N(0, (0.02/√(2L))²) so the residual stream's variance does
    not grow with depth; biases 0; LayerNorm scale 1 and bias 0.
    """
    V, P, D, L, F = cfg.vocab_size, cfg.n_positions, cfg.n_embd, cfg.n_layer, cfg.n_inner
    proj_std = INIT_STD / math.sqrt(2 * L)
    # One normal draw carved into the matrices: a draw per matrix compiles ~7x slower on CPU.
    shapes = {"wte": (V, D), "wpe": (P, D), "qkv": (L, D, 3 * D), "o": (L, D, D), "fc": (L, D, F), "proj": (L, F, D)}
    if not cfg.tie_word_embeddings:
        shapes["lm_head"] = (V, D)
    z = jax.random.normal(key, (sum(math.prod(s) for s in shapes.values()),), jnp.float32)
    offsets = itertools.accumulate((math.prod(s) for s in shapes.values()), initial=0)
    w = {name: z[start:start + math.prod(shape)].reshape(shape) for (name, shape), start in zip(shapes.items(), offsets)}

    def layer_norm(*lead):
        return {"scale": jnp.ones((*lead, D), jnp.float32), "bias": jnp.zeros((*lead, D), jnp.float32)}

    params = {
        "wte": INIT_STD * w["wte"],
        "wpe": INIT_STD * w["wpe"],
        "h": {
            "ln_1": layer_norm(L),
            "attn": {
                "c_attn": {"kernel": INIT_STD * w["qkv"], "bias": jnp.zeros((L, 3 * D), jnp.float32)},
                "c_proj": {"kernel": proj_std * w["o"], "bias": jnp.zeros((L, D), jnp.float32)},
            },
            "ln_2": layer_norm(L),
            "mlp": {
                "c_fc": {"kernel": INIT_STD * w["fc"], "bias": jnp.zeros((L, F), jnp.float32)},
                "c_proj": {"kernel": proj_std * w["proj"], "bias": jnp.zeros((L, D), jnp.float32)},
            },
        },
        "ln_f": layer_norm(),
    }
    if not cfg.tie_word_embeddings:
        params["lm_head"] = INIT_STD * w["lm_head"]
    return params


def apply(params: dict, tokens_BxT: jax.Array, cfg: GPT2Config, *, compute_dtype=jnp.float32) -> jax.Array:
    """Next-token logits, float32 ``(B, T, V)``; position ``i`` sees tokens ``≤ i`` only.

    With ``compute_dtype=bfloat16`` the matmul operands (params and activations) are cast to
    bf16; the residual stream, LayerNorm statistics, softmax and logits stay float32.
    """
    return language.head_logits(*features(params, tokens_BxT, cfg, compute_dtype=compute_dtype), compute_dtype)


def features(params: dict, tokens_BxT: jax.Array, cfg: GPT2Config, *, compute_dtype=jnp.float32) -> tuple[jax.Array, jax.Array]:
    """``(x, W)``: the final normed hidden states ``(B, T, D)`` (float32) and the ``(V, D)`` head, logits ``x · Wᵀ``."""
    x_BxTxD, _ = _blocks(params, tokens_BxT, cfg, compute_dtype, keep=False)
    x_BxTxD = _layer_norm(x_BxTxD, params["ln_f"], cfg.layer_norm_epsilon)
    head_VxD = params["wte"] if cfg.tie_word_embeddings else params["lm_head"]
    return x_BxTxD, head_VxD


def loss(params: dict, tokens_BxT: jax.Array, targets_BxT: jax.Array, cfg: GPT2Config, *,
         compute_dtype=jnp.float32) -> jax.Array:
    """Mean next-token cross-entropy in nats, ``mean_{b,i} [logsumexp_v z_{biv} − z_{b,i,y_bi}]`` (float32)."""
    return language.head_loss(*features(params, tokens_BxT, cfg, compute_dtype=compute_dtype), targets_BxT, compute_dtype)


def activations(params: dict, tokens_BxT: jax.Array, cfg: GPT2Config, *, compute_dtype=jnp.float32) -> dict:
    """The intermediates of :func:`apply`'s blocks (the same block function), stacked over layers by its ``lax.scan``::

        residual        (L, B, T, D)  x^l, the residual stream entering block l (float32)
        attn_out        (L, B, T, D)  Attn(LN_1(x^l)), the attention branch (float32)
        mlp_hidden      (L, B, T, F)  gelu_new(LN_2(a) W_fc + b_fc), a = x^l + attn_out (compute_dtype)
        mlp_out         (L, B, T, D)  MLP(LN_2(a)), the MLP branch (float32); x^{l+1} = a + mlp_out
        final_residual     (B, T, D)  x^L, entering LN_f
    """
    x_BxTxD, per_layer = _blocks(params, tokens_BxT, cfg, compute_dtype, keep=True)
    return {**per_layer, "final_residual": x_BxTxD}


def _blocks(params: dict, tokens_BxT: jax.Array, cfg: GPT2Config, compute_dtype, keep: bool) -> tuple[jax.Array, dict | None]:
    """``x^L`` from the token and position embeddings through every block (``lax.scan`` over the stacked
    layers), and each block's intermediates (:func:`_block`) stacked over layers when ``keep``, else None."""
    B, T = tokens_BxT.shape
    if T > cfg.n_positions:
        raise UserError(f"sequence length {T} exceeds the model's context n_positions={cfg.n_positions}: "
                        f"use a context of at most {cfg.n_positions} tokens")
    x_BxTxD = params["wte"][tokens_BxT] + params["wpe"][None, :T, :]

    def body(x_BxTxD, layer):
        x_BxTxD, parts = language.remat(lambda x, lay: _block(x, lay, cfg, compute_dtype))(x_BxTxD, layer)
        return x_BxTxD, parts if keep else None

    return jax.lax.scan(body, x_BxTxD, params["h"])


def _block(x_BxTxD: jax.Array, layer: dict, cfg: GPT2Config, dtype) -> tuple[jax.Array, dict]:
    """One pre-LN block, ``a = x + Attn(LN_1(x))``, ``x' = a + MLP(LN_2(a))``: ``x'`` and the intermediates
    named as in :func:`activations`."""
    attn_BxTxD = _attention(_layer_norm(x_BxTxD, layer["ln_1"], cfg.layer_norm_epsilon), layer["attn"], cfg.n_head, dtype)
    a_BxTxD = x_BxTxD + attn_BxTxD
    hidden_BxTxF, mlp_BxTxD = _mlp(_layer_norm(a_BxTxD, layer["ln_2"], cfg.layer_norm_epsilon), layer["mlp"], dtype)
    parts = {"residual": x_BxTxD, "attn_out": attn_BxTxD, "mlp_hidden": hidden_BxTxF, "mlp_out": mlp_BxTxD}
    return a_BxTxD + mlp_BxTxD, parts


def _layer_norm(x_BxTxD: jax.Array, ln: dict, eps: float) -> jax.Array:
    """``(x − μ)/√(σ² + ε) · scale + bias`` over the last axis, in float32 (biased σ², as torch)."""
    x_BxTxD = x_BxTxD.astype(jnp.float32)
    mean_BxTx1 = jnp.mean(x_BxTxD, axis=-1, keepdims=True)
    var_BxTx1 = jnp.mean(jnp.square(x_BxTxD - mean_BxTx1), axis=-1, keepdims=True)
    y_BxTxD = (x_BxTxD - mean_BxTx1) * jax.lax.rsqrt(var_BxTx1 + eps)
    return y_BxTxD * ln["scale"][None, None, :] + ln["bias"][None, None, :]


def _dense(x_BxTxI: jax.Array, layer: dict, dtype) -> jax.Array:
    """``x @ kernel + bias`` with operands in ``dtype`` (float32 accumulation, result in ``dtype``)."""
    y_BxTxO = language.matmul(x_BxTxI, layer["kernel"], dtype)
    return (y_BxTxO + layer["bias"][None, None, :]).astype(dtype)


def _attention(h_BxTxD: jax.Array, attn: dict, n_head: int, dtype) -> jax.Array:
    """Causal multi-head self-attention; scores and softmax in float32, masked entries exactly 0."""
    B, T, D = h_BxTxD.shape
    qkv_BxTx3D = _dense(h_BxTxD, attn["c_attn"], dtype)
    q_BxTxNxH, k_BxTxNxH, v_BxTxNxH = (a.reshape(B, T, n_head, D // n_head) for a in jnp.split(qkv_BxTx3D, 3, axis=-1))
    out_BxTxNxH = language.causal_attention(q_BxTxNxH, k_BxTxNxH, v_BxTxNxH, dtype)
    return _dense(out_BxTxNxH.reshape(B, T, D), attn["c_proj"], dtype).astype(jnp.float32)


def _mlp(h_BxTxD: jax.Array, mlp: dict, dtype) -> tuple[jax.Array, jax.Array]:
    """The hidden activation ``a = gelu_new(h W_fc + b_fc)`` (tanh-GELU, in ``dtype``) and the output
    ``a W_proj + b_proj`` (float32)."""
    a_BxTxF = jax.nn.gelu(_dense(h_BxTxD, mlp["c_fc"], dtype), approximate=True)
    return a_BxTxF, _dense(a_BxTxF, mlp["c_proj"], dtype).astype(jnp.float32)


# --- the family's symmetries (read by connect.symmetry and connect.lm.alignment) ----------------------


def symmetry(cfg: GPT2Config) -> dict:
    """The permutations that leave every layer's function unchanged (git-re-basin's PermutationSpec), per layer:
    ``mlp`` reorders the ``F`` units (``c_fc`` columns and bias, ``mlp.c_proj`` rows; GELU acts elementwise),
    ``heads`` the ``n_head`` heads (blocks of ``d_head`` columns of each of q, k, v — fused 3 on ``c_attn`` —
    and the matching rows of ``attn.c_proj``). Leaf path -> (axis, copies fused along it)."""
    return {
        "mlp": {"leaves": {("h", "mlp", "c_fc", "kernel"): (-1, 1), ("h", "mlp", "c_fc", "bias"): (-1, 1),
                           ("h", "mlp", "c_proj", "kernel"): (-2, 1)}, "block": 1, "stacked": True},
        "heads": {"leaves": {("h", "attn", "c_attn", "kernel"): (-1, 3), ("h", "attn", "c_attn", "bias"): (-1, 3),
                             ("h", "attn", "c_proj", "kernel"): (-2, 1)}, "block": cfg.n_embd // cfg.n_head, "stacked": True},
    }


#: The residual stream, for rotations (:mod:`connect.lm.alignment`): the stacked layers' key, the embeddings
#: ``(rows, D)``, the tied embedding and the untied head, the final norm, the residual-reading layers (kernel
#: ``(L, D, O)``) with the norm before each, the residual-writing layers (kernel ``(L, I, D)``, bias ``(L, D)``)
#: and the norm's kind (``layer``: LayerNorm, rotations must fix 𝟙; ``rms``: RMSNorm, any rotation).
RESIDUAL = {"layers": "h", "embeddings": ("wte", "wpe"), "tied": "wte", "head": "lm_head", "final_norm": "ln_f",
            "readers": {("attn", "c_attn"): "ln_1", ("mlp", "c_fc"): "ln_2"},
            "writers": (("attn", "c_proj"), ("mlp", "c_proj")), "norm": "layer"}
RESIDUAL_READERS, RESIDUAL_WRITERS = RESIDUAL["readers"], RESIDUAL["writers"]


# --- the family's weight matrices (one naming for spectra, constraint norms and Muon's split) -----------

#: Per-layer matrices: name suffix -> (leaf path under ``h``, block index, blocks fused on the last axis).
LAYER_MATRICES: dict[str, tuple[tuple[str, ...], int, int]] = {
    "attn.q": (("attn", "c_attn", "kernel"), 0, 3),
    "attn.k": (("attn", "c_attn", "kernel"), 1, 3),
    "attn.v": (("attn", "c_attn", "kernel"), 2, 3),
    "attn.c_proj": (("attn", "c_proj", "kernel"), 0, 1),
    "mlp.c_fc": (("mlp", "c_fc", "kernel"), 0, 1),
    "mlp.c_proj": (("mlp", "c_proj", "kernel"), 0, 1),
}
#: Muon's split, from the same naming: leaf path -> number of matrices fused along its LAST axis (the
#: fused QKV kernel is orthogonalised as three ``D x D`` matrices, q, k and v). Every other leaf goes to AdamW.
MUON_MATRICES: dict[tuple[str, ...], int] = {("h", *path): fused for path, _, fused in LAYER_MATRICES.values()}


def matrix_names(cfg: GPT2Config) -> list[str]:
    """Every weight matrix by its Hugging Face name: per layer ``h.{l}.attn.q``, ``.k``, ``.v`` (the three
    blocks of ``c_attn``), ``h.{l}.attn.c_proj``, ``h.{l}.mlp.c_fc``, ``h.{l}.mlp.c_proj``; then ``wte``, ``wpe``
    and ``lm_head`` (untied heads only)."""
    names = [f"h.{layer}.{m}" for layer in range(cfg.n_layer) for m in LAYER_MATRICES]
    return names + ["wte", "wpe"] + ([] if cfg.tie_word_embeddings else ["lm_head"])


def hidden_matrix_names(cfg: GPT2Config) -> tuple[str, ...]:
    """The matrices Muon orthogonalises (:data:`MUON_MATRICES`, q, k and v separately): every ``h.*`` matrix."""
    return tuple(n for n in matrix_names(cfg) if n.startswith("h."))


def matrices(params: dict, cfg: GPT2Config, names=None) -> dict:
    """``{name: W}`` for the named matrices (default all, :func:`matrix_names`), each ``(…, fan_out, fan_in)``
    (the stored ``(in, out)`` kernels transposed; embeddings and head ``(V, D)`` as stored), any leading
    axes of the leaves kept (e.g. a t axis). A name this config lacks is a UserError."""
    names = checked_matrix_names(cfg, names)
    out = {}
    for name in names:
        if name.startswith("h."):
            _, layer, suffix = name.split(".", 2)
            path, block, fused = LAYER_MATRICES[suffix]
            w = _leaf(params, ("h",) + path)[..., int(layer), :, :]
            width = w.shape[-1] // fused
            out[name] = jnp.swapaxes(w[..., block * width:(block + 1) * width], -1, -2)
        else:
            out[name] = _leaf(params, (name,))
    return out


def checked_matrix_names(cfg: GPT2Config, names=None) -> list[str]:
    """``names`` (default: all of :func:`matrix_names`) after checking this config has each of them."""
    return language.checked_names(matrix_names(cfg), names, cfg.n_layer, cfg.tie_word_embeddings)


def _leaf(params, path: tuple[str, ...]):
    node = params
    for key in path:
        if not isinstance(node, dict) or key not in node:
            raise UserError(f"the checkpoint has no {'/'.join(path)}: pass a GPT-2 checkpoint of this config "
                            "(connect train-lm or Hugging Face GPT2LMHeadModel)")
        node = node[key]
    return node
