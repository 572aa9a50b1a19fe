"""Alignment of GPT-2 models: permutations of MLP units and attention heads, and an orthogonal
rotation of the residual stream, each leaving the network's function unchanged.

Symmetries of :mod:`connect.models.gpt2` used here (Ainsworth et al. 2023, "Git Re-Basin",
for permutations; Ashkboos et al. 2024, "SliceGPT", §3, for residual rotations):

* **MLP units** of layer ℓ: permuting the columns of ``c_fc`` (kernel and bias) and the rows of
  ``mlp.c_proj``'s kernel by the same π keeps the layer (GELU acts elementwise).
* **Attention heads** of layer ℓ: permuting head blocks of q, k and v (columns of ``c_attn``,
  ``d_h`` at a time, the same π for the three) and the matching row blocks of ``attn.c_proj``.
* **Residual rotation** by an orthogonal ``R`` with ``R𝟙 = 𝟙``: the stream ``x ↦ xR``. LayerNorm
  ``n(x) = (x − mean x)/√(var x + ε)`` commutes with such an R (centering is projection
  off 𝟙, which R fixes; the norm is invariant), so once the gains and biases are *folded* out
  of LayerNorm, embeddings and residual-writing matrices are multiplied by R on the right,
  residual-reading matrices by Rᵀ on the left.

Folding (:func:`fold_layernorms`): ``LN(x)K + c = n(x)·diag(g)K + (bK + c)``, so the gain goes
into the next kernel and the bias into the next bias; the final LayerNorm has no following
bias (there is no logit bias), so its gain goes into the head and its bias becomes
``b/g`` on a unit-gain LayerNorm (``(n + b/g)·diag(g)Wᵀ = (n·g + b)Wᵀ``). A tied head is
untied (the input embedding stays, the head takes the gain).

Matching is weight matching: maximise ``⟨θ_A, T(θ_B)⟩`` over the transformations T, i.e.
minimise ``‖θ_A − T(θ_B)‖`` since T preserves norms — alternating exact linear assignments
for the permutations (per layer, :func:`scipy.optimize.linear_sum_assignment`) and an
orthogonal Procrustes problem restricted to ``R𝟙 = 𝟙`` for the rotation: with an orthonormal
basis ``P = [𝟙/√D, P⊥]`` and the cross-Gram ``G`` (``⟨G, R⟩`` is the objective),
``R = P·diag(1, UVᵀ)·Pᵀ`` where ``UΣVᵀ`` is the SVD of ``(PᵀGP)₂₂`` (Schönemann 1966).
Each alternation cannot increase the distance.

The aligned pair is a *different architecture* from the inputs: LayerNorms at unit gain (inner
ones at zero bias, the final one with bias ``b/g``) and an untied head, listed in
:attr:`Alignment.architecture_changes`. Keep it with :meth:`Alignment.save` (a connect GPT-2
checkpoint) or :meth:`Alignment.export` (a Hugging Face ``GPT2LMHeadModel`` directory), and read
either back with :func:`connect.lm.training.load`.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from connect import checkpoints, symmetry
from connect.errors import UserError
from connect.lm import huggingface
from connect.models import gpt2
from connect.models.gpt2 import GPT2Config

#: Residual-reading kernels ``(L, D, O)``, each preceded by the LayerNorm named, and residual-writing layers
#: ``(L, I, D)`` with bias ``(L, D)`` (the family's declaration).
READERS, WRITERS = gpt2.RESIDUAL_READERS, gpt2.RESIDUAL_WRITERS
#: What :func:`fold_layernorms` changes in the architecture (the function stays the same).
FOLDED = ("LayerNorm gains folded into the following matrices: every LayerNorm has unit gain, ln_1 and ln_2 "
          "zero bias (gains into c_attn/c_fc kernels, biases into their biases), ln_f bias b/g (gain into the head)")
#: ... and for a model with a tied head.
UNTIED = "tied head untied: lm_head = wte·diag(g_f) is a separate array (tie_word_embeddings false), wte stays"


@dataclasses.dataclass
class Alignment:
    """Result of :func:`align`: A and aligned B (both folded, same function as the inputs), their
    config (head untied), the transformations found, and the distances.

    ``report`` rows ``{"step", "iteration", "distance"}`` are all ``‖θ̃_A − T(θ̃_B)‖₂`` on the
    *folded* trees θ̃ (every row has the same arrays, an untied ``lm_head`` included), so they
    compare: row 0 (``"folded"``, iteration 0) is before any transformation, then one row per
    permutation and rotation step. ``distance_unfolded`` is ``‖θ_A − θ_B‖₂`` of the inputs as given
    (a tied model has no ``lm_head`` there): it is *not* comparable with the report.
    ``converged``: the last iteration found the same permutations (hence the same rotation) as the
    one before; without rotation one iteration is exact (each layer's assignment is independent).
    """

    params_a: dict
    params_b: dict
    cfg: GPT2Config  # of params_a and params_b: tie_word_embeddings=False
    mlp_perms: np.ndarray  # (L, F): slot j of layer ℓ receives B's unit mlp_perms[ℓ, j]
    head_perms: np.ndarray  # (L, N)
    rotation: np.ndarray  # (D, D), R𝟙 = 𝟙
    report: list[dict]
    converged: bool
    iterations: int
    distance_unfolded: float
    input_cfg: GPT2Config  # the config the inputs were given with
    architecture_changes: tuple[str, ...]  # from input_cfg to cfg: FOLDED, and UNTIED for a tied input

    def summary(self) -> dict:
        """JSON-able facts of the alignment (no arrays): changes, convergence, distances, configs."""
        return {"architecture_changes": list(self.architecture_changes), "converged": self.converged,
                "iterations": self.iterations, "report": self.report, "distance_unfolded": self.distance_unfolded,
                "input_config": self.input_cfg.to_dict(), "config": self.cfg.to_dict()}

    def save(self, path: str, which: str = "b") -> None:
        """Write aligned B (``which="b"``) or folded A (``"a"``) as a connect GPT-2 checkpoint directory
        (:func:`connect.checkpoints.save_checkpoint`; metadata ``"model": "gpt2"``, ``"model_config"``
        the aligned config, ``"alignment"`` :meth:`summary` and ``"endpoint"``). Read it with :func:`connect.lm.training.load`."""
        params = self._params(which)
        meta = {"model": "gpt2", "model_config": self.cfg.to_dict(), "alignment": {"endpoint": which, **self.summary()}}
        checkpoints.save_checkpoint(path, params, meta)

    def export(self, path: str, which: str = "b") -> None:
        """Write aligned B (or folded A) as a Hugging Face ``GPT2LMHeadModel`` directory (``config.json``
        with ``tie_word_embeddings`` false, ``model.safetensors``): ``transformers``'
        ``GPT2LMHeadModel.from_pretrained(path)`` and :func:`connect.lm.training.load` read it."""
        huggingface.save_pretrained(self._params(which), self.cfg, path)

    def _params(self, which: str) -> dict:
        if which not in ("a", "b"):
            raise UserError(f"which={which!r}: pass 'a' (folded A) or 'b' (aligned B)")
        return self.params_a if which == "a" else self.params_b


def _numpy(params) -> dict:
    return jax.tree.map(lambda a: np.array(a, dtype=np.float64), jax.device_get(params))  # a copy


def _cast_like(params: dict, like: dict) -> dict:
    return jax.tree.map(lambda a, b: np.asarray(a, dtype=np.asarray(b).dtype), params, like)


def fold_layernorms(params: dict, cfg: GPT2Config) -> tuple[dict, GPT2Config]:
    """The same function with every LayerNorm at unit gain and the inner ones at zero bias
    (gains and biases folded into the following layer; the final bias becomes ``b/g``)."""
    p = _numpy(params)
    h = p["h"]
    for (block, name), ln in READERS.items():
        g_LxD, b_LxD = h[ln]["scale"], h[ln]["bias"]
        layer = h[block][name]
        layer["bias"] = layer["bias"] + np.einsum("ld,ldo->lo", b_LxD, layer["kernel"])
        layer["kernel"] = g_LxD[:, :, None] * layer["kernel"]
        h[ln] = {"scale": np.ones_like(g_LxD), "bias": np.zeros_like(b_LxD)}
    g_D, b_D = p["ln_f"]["scale"], p["ln_f"]["bias"]
    if np.any(np.abs(g_D) < 1e-12 * max(1.0, np.abs(g_D).max())):
        raise UserError("the final LayerNorm has a zero gain, so its bias cannot be folded: this checkpoint cannot be rotated; align with --no-rotate")
    head_VxD = p["wte"] if cfg.tie_word_embeddings else p["lm_head"]
    p["lm_head"] = head_VxD * g_D[None, :]
    p["ln_f"] = {"scale": np.ones_like(g_D), "bias": b_D / g_D}
    return _cast_like(p, _with_head(params, p)), dataclasses.replace(cfg, tie_word_embeddings=False)


def _with_head(params: dict, like: dict) -> dict:
    """``params`` with an ``lm_head`` entry (for dtype casting of an untied result)."""
    return params if "lm_head" in params else {**params, "lm_head": like["lm_head"].astype(np.asarray(params["wte"]).dtype)}


def _check_folded(p: dict) -> None:
    h = p["h"]
    if any(np.any(h[ln]["scale"] != 1) or np.any(h[ln]["bias"] != 0) for ln in ("ln_1", "ln_2")) or np.any(p["ln_f"]["scale"] != 1):
        raise ValueError("rotate a model whose LayerNorms are folded (fold_layernorms) first")


def rotation_basis(d: int) -> np.ndarray:
    """An orthonormal ``(D, D)`` basis whose first column is ``𝟙/√D``."""
    q, _ = np.linalg.qr(np.column_stack([np.ones(d), np.eye(d)[:, : d - 1]]))
    return q * np.sign(q[0, 0])


def rotate_residual(params: dict, rotation_DxD: np.ndarray) -> dict:
    """The residual stream rotated, ``x ↦ xR``: embeddings, head, final bias and writers times
    R on the right, readers times Rᵀ on the left. Needs folded LayerNorms and ``R𝟙 = 𝟙``."""
    p = _numpy(params)
    _check_folded(p)
    r = np.asarray(rotation_DxD, dtype=np.float64)
    ones = np.ones(r.shape[0])
    if not (np.allclose(r @ r.T, np.eye(len(r)), atol=1e-6) and np.allclose(r @ ones, ones, atol=1e-6)):
        raise ValueError("the residual rotation must be orthogonal with R𝟙 = 𝟙 (LayerNorm centres along 𝟙)")
    for key in ("wte", "wpe", "lm_head"):
        p[key] = p[key] @ r
    p["ln_f"]["bias"] = p["ln_f"]["bias"] @ r
    for block, name in READERS:
        p["h"][block][name]["kernel"] = np.einsum("ed,leo->ldo", r, p["h"][block][name]["kernel"])
    for block, name in WRITERS:
        layer = p["h"][block][name]
        layer["kernel"], layer["bias"] = layer["kernel"] @ r, layer["bias"] @ r
    return _cast_like(p, params)


def permute(params: dict, cfg: GPT2Config, mlp_perms_LxF: np.ndarray, head_perms_LxN: np.ndarray) -> dict:
    """MLP units and attention heads of every layer reordered: slot j receives B's ``perm[j]`` (the family's
    symmetry :func:`connect.models.gpt2.symmetry`, applied by :func:`connect.symmetry.permute`)."""
    return symmetry.permute(params, _spec(cfg), {"mlp": mlp_perms_LxF, "heads": head_perms_LxN})


def match_permutations(params_a: dict, params_b: dict, cfg: GPT2Config) -> tuple[np.ndarray, np.ndarray]:
    """Per layer, the MLP and head permutations of B maximising ``⟨θ_A, π(θ_B)⟩`` (exact LAPs,
    :func:`connect.symmetry.match`)."""
    perms = symmetry.match(params_a, params_b, _spec(cfg))
    return perms["mlp"], perms["heads"]


def _spec(cfg: GPT2Config) -> dict:
    return symmetry.spec(gpt2.symmetry(cfg))


def match_rotation(params_a: dict, params_b: dict) -> np.ndarray:
    """The orthogonal ``R`` with ``R𝟙 = 𝟙`` maximising ``⟨θ_A, R(θ_B)⟩`` (restricted Procrustes)."""
    a, b = _numpy(params_a), _numpy(params_b)
    d = a["wte"].shape[1]
    g = np.zeros((d, d))
    for key in ("wte", "wpe", "lm_head"):
        g += b[key].T @ a[key]  # writers M: ⟨M_A, M_B R⟩ = ⟨M_Bᵀ M_A, R⟩
    g += np.outer(b["ln_f"]["bias"], a["ln_f"]["bias"])
    for block, name in WRITERS:
        la, lb = a["h"][block][name], b["h"][block][name]
        g += np.einsum("lid,lie->de", lb["kernel"], la["kernel"]) + np.einsum("ld,le->de", lb["bias"], la["bias"])
    for block, name in READERS:  # readers K: ⟨K_A, Rᵀ K_B⟩ = ⟨K_B K_Aᵀ, R⟩
        g += np.einsum("ldo,leo->de", b["h"][block][name]["kernel"], a["h"][block][name]["kernel"])
    basis = rotation_basis(d)
    u, _, vt = np.linalg.svd((basis.T @ g @ basis)[1:, 1:])
    inner = np.eye(d)
    inner[1:, 1:] = u @ vt
    return basis @ inner @ basis.T


def distance(params_a: dict, params_b: dict) -> float:
    """``‖θ_A − θ_B‖₂`` over every array."""
    sq = jax.tree.map(lambda x, y: float(np.sum((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2)), params_a, params_b)
    return float(np.sqrt(sum(jax.tree.leaves(sq))))


def align(params_a: dict, params_b: dict, cfg: GPT2Config, *, rotate: bool = True, max_iters: int = 10) -> Alignment:
    """Fold both models' LayerNorms, then alternate permutation matching and (when ``rotate``)
    the residual rotation until the permutations repeat (``converged``) or ``max_iters``
    iterations; B's function is unchanged throughout. ``report`` lists the distance
    ``‖θ̃_A − T(θ̃_B)‖`` of the folded trees before and after each step (see :class:`Alignment`)."""
    if max_iters < 1:
        raise ValueError(f"max_iters={max_iters}: align needs at least one iteration")
    a, cfg_f = fold_layernorms(params_a, cfg)
    b, _ = fold_layernorms(params_b, cfg)
    if jax.tree.structure(a) != jax.tree.structure(b) or any(x.shape != y.shape for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))):
        raise UserError("the two models have different architectures: align checkpoints of the same GPT-2 config")
    rot = np.eye(cfg.n_embd)
    report = [{"step": "folded", "iteration": 0, "distance": distance(a, b)}]
    mlp = heads = None
    converged, it = False, 0
    while not converged and it < max_iters:
        it += 1
        new_mlp, new_heads = match_permutations(a, rotate_residual(b, rot) if rotate else b, cfg)
        permuted = permute(b, cfg, new_mlp, new_heads)
        report.append({"step": "permute heads and MLP units", "iteration": it,
                       "distance": distance(a, rotate_residual(permuted, rot) if rotate else permuted)})
        # Without rotation each layer's assignment is exact at once; with it, the rotation is a function of
        # the permutations, so permutations that repeat are a fixed point.
        converged = not rotate or (mlp is not None and np.array_equal(new_mlp, mlp) and np.array_equal(new_heads, heads))
        mlp, heads = new_mlp, new_heads
        if rotate:
            rot = match_rotation(a, permuted)
            report.append({"step": "rotate residual stream", "iteration": it, "distance": distance(a, rotate_residual(permuted, rot))})
    out = permute(b, cfg, mlp, heads)
    if rotate:
        out = rotate_residual(out, rot)
    changes = (FOLDED, UNTIED) if cfg.tie_word_embeddings else (FOLDED,)
    return Alignment(a, out, cfg_f, mlp, heads, rot, report, converged=bool(converged), iterations=it,
                     distance_unfolded=distance(params_a, params_b), input_cfg=cfg, architecture_changes=changes)
