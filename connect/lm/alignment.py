"""Alignment of two language models of one family: permutations of MLP units and attention heads, and an
orthogonal rotation of the residual stream, each leaving the network's function unchanged.

The symmetries come from the family's declarations (:mod:`connect.models`): ``symmetry(cfg)`` lists the
permutations as data (Ainsworth et al. 2023, "Git Re-Basin", their PermutationSpec; :mod:`connect.symmetry`),
``RESIDUAL`` what reads and writes the residual stream (Ashkboos et al. 2024, "SliceGPT", §3):

* **MLP units** of layer ℓ: GPT-2's ``c_fc`` columns with ``c_proj`` rows; SwiGLU's gate *and* up columns
  together with ``down_proj`` rows (``silu(g)·u`` acts unit by unit); GPT-NeoX's ``dense_h_to_4h``/``dense_4h_to_h``.
* **Attention heads**: blocks of ``d_h`` of q, k and v with the matching rows of the output projection. With
  grouped-query attention two levels: key/value groups (k and v heads with their query heads), then query heads
  within their group. Rotary positions act inside a head, on a fixed order of its dimensions, so only whole
  heads move.
* **Residual rotation** ``x ↦ xR``: once the norms' gains (and biases) are *folded* into the layers that read
  their output, the embeddings and residual-writing matrices are multiplied by R on the right, the
  residual-reading matrices by Rᵀ on the left. RMSNorm ``x/rms(x)`` is equivariant under *every* orthogonal R
  (``‖xR‖ = ‖x‖``); LayerNorm ``(x − mean x)/σ`` only under those with ``R𝟙 = 𝟙`` (centering projects off 𝟙).

Folding (:func:`fold_norms`): ``N(x)K + c = n(x)·diag(g)K + (bK + c)``, so the gain goes into the next kernel
and a LayerNorm's bias into the next bias; the final norm's gain goes into the head, and a LayerNorm's final bias
becomes ``b/g`` on a unit-gain LayerNorm (``(n + b/g)·diag(g)Wᵀ = (n·g + b)Wᵀ``). A tied head is untied (the
input embedding stays, the head takes the gain).

Matching is weight matching: maximise ``⟨θ_A, T(θ_B)⟩`` over the transformations T, i.e. minimise
``‖θ_A − T(θ_B)‖`` since T preserves norms — alternating exact linear assignments for the permutations (per
layer, :func:`connect.symmetry.match`) and an orthogonal Procrustes problem for the rotation: with the cross-Gram
``G`` (``⟨G, R⟩`` is the objective) ``R = UVᵀ`` for ``G = UΣVᵀ`` (Schönemann 1966), for LayerNorm restricted to
``R𝟙 = 𝟙`` in an orthonormal basis ``P = [𝟙/√D, P⊥]``: ``R = P·diag(1, UVᵀ)·Pᵀ`` with the SVD of ``(PᵀGP)₂₂``.
Each alternation cannot increase the distance.

The aligned pair is a *different architecture* from the inputs: norms at unit gain (inner LayerNorms at zero
bias, the final one with bias ``b/g``) and an untied head, listed in :attr:`Alignment.architecture_changes`.
Keep it with :meth:`Alignment.save` (a connect checkpoint) or :meth:`Alignment.export` (a Hugging Face
directory), and read either back with :func:`connect.lm.training.load`.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from connect import checkpoints, models, symmetry
from connect.errors import UserError
from connect.lm import huggingface
from connect.models import LMConfig

#: What :func:`fold_norms` changes in the architecture (the function stays the same).
FOLDED = ("norm gains folded into the following matrices: every norm has unit gain, the inner LayerNorms zero bias "
          "(gains into the reading kernels, biases into their biases), a final LayerNorm bias b/g (gain into the head)")
#: ... and for a model with a tied head.
UNTIED = "tied head untied: the head = embedding·diag(g_final) is a separate array (tie_word_embeddings false), the embedding stays"


@dataclasses.dataclass
class Alignment:
    """Result of :func:`align`: A and aligned B (both folded, same function as the inputs), their config (head
    untied), the transformations found, and the distances.

    ``perms``: the family's permutations by name (``symmetry(cfg)``: ``mlp``, ``heads`` or ``kv_heads`` and
    ``q_heads``), ``(L, N)`` or ``(L, G, N)``; slot j of layer ℓ receives B's unit ``perm[ℓ, j]``. ``report`` rows
    ``{"step", "iteration", "distance"}`` are all ``‖θ̃_A − T(θ̃_B)‖₂`` on the *folded* trees θ̃, so they compare:
    row 0 (``"folded"``) is before any transformation. ``distance_unfolded`` is ``‖θ_A − θ_B‖₂`` of the inputs as
    given (a tied model has no separate head there): it is *not* comparable with the report. ``converged``: the
    last iteration found the same permutations (hence the same rotation) as the one before; without rotation one
    iteration is exact (each layer's assignments are independent)."""

    params_a: dict
    params_b: dict
    cfg: LMConfig  # of params_a and params_b: tie_word_embeddings=False
    perms: dict[str, np.ndarray]
    rotation: np.ndarray  # (D, D); R𝟙 = 𝟙 for LayerNorm families
    report: list[dict]
    converged: bool
    iterations: int
    distance_unfolded: float
    input_cfg: LMConfig  # the config the inputs were given with
    architecture_changes: tuple[str, ...]  # from input_cfg to cfg: FOLDED, and UNTIED for a tied input

    def summary(self) -> dict:
        """JSON-able facts of the alignment (no arrays): changes, convergence, distances, configs."""
        return {"architecture_changes": list(self.architecture_changes), "converged": self.converged,
                "iterations": self.iterations, "report": self.report, "distance_unfolded": self.distance_unfolded,
                "input_config": self.input_cfg.to_dict(), "config": self.cfg.to_dict()}

    def save(self, path: str, which: str = "b") -> None:
        """Write aligned B (``which="b"``) or folded A (``"a"``) as a connect checkpoint directory
        (:func:`connect.checkpoints.save_checkpoint`; metadata ``"model"`` the family, ``"model_config"`` the
        aligned config, ``"alignment"`` :meth:`summary` and ``"endpoint"``). Read it with :func:`connect.lm.training.load`."""
        meta = {"model": models.family(self.cfg).FAMILY, "model_config": self.cfg.to_dict(),
                "alignment": {"endpoint": which, **self.summary()}}
        checkpoints.save_checkpoint(path, self._params(which), meta)

    def export(self, path: str, which: str = "b") -> None:
        """Write aligned B (or folded A) as a Hugging Face directory (``tie_word_embeddings`` false) that
        ``transformers``' ``from_pretrained`` and :func:`connect.lm.training.load` read."""
        huggingface.save_pretrained(self._params(which), self.cfg, path)

    def _params(self, which: str) -> dict:
        if which not in ("a", "b"):
            raise UserError(f"which={which!r}: pass 'a' (folded A) or 'b' (aligned B)")
        return self.params_a if which == "a" else self.params_b


def _numpy(params) -> dict:
    return jax.tree.map(lambda a: np.array(a, dtype=np.float64), jax.device_get(params))  # a copy


def _cast_like(params: dict, like: dict) -> dict:
    return jax.tree.map(lambda a, b: np.asarray(a, dtype=np.asarray(b).dtype), params, like)


def fold_norms(params: dict, cfg: LMConfig) -> tuple[dict, LMConfig]:
    """The same function with every norm at unit gain and the inner LayerNorms at zero bias (gains and biases
    folded into the layers reading them; a final LayerNorm's bias becomes ``b/g``) and an untied head."""
    res = models.family(cfg).RESIDUAL
    p = _numpy(params)
    h = p[res["layers"]]
    for (block, name), norm in res["readers"].items():
        layer, ln = h[block][name], h[norm]
        if "bias" in ln and np.any(ln["bias"] != 0):
            if "bias" not in layer:
                raise UserError(f"{norm}'s bias cannot be folded into {block}.{name}, which has no bias: align this model with --no-rotate")
            layer["bias"] = layer["bias"] + np.einsum("ld,ldo->lo", ln["bias"], layer["kernel"])
        layer["kernel"] = ln["scale"][:, :, None] * layer["kernel"]
    for norm in set(res["readers"].values()):
        h[norm] = {key: (np.ones_like if key == "scale" else np.zeros_like)(x) for key, x in h[norm].items()}
    final = p[res["final_norm"]]
    g_D = final["scale"]
    if "bias" in final and np.any(np.abs(g_D) < 1e-12 * max(1.0, np.abs(g_D).max())):
        raise UserError("the final LayerNorm has a zero gain, so its bias cannot be folded: this checkpoint cannot be rotated; align with --no-rotate")
    head_VxD = p[res["tied"]] if cfg.tie_word_embeddings else p[res["head"]]
    p[res["head"]] = head_VxD * g_D[None, :]
    p[res["final_norm"]] = {"scale": np.ones_like(g_D), **({"bias": final["bias"] / g_D} if "bias" in final else {})}
    like = params if res["head"] in params else {**params, res["head"]: params[res["tied"]]}
    return _cast_like(p, like), dataclasses.replace(cfg, tie_word_embeddings=False)


fold_layernorms = fold_norms


def _check_folded(p: dict, res: dict) -> None:
    h = p[res["layers"]]
    inner = [x for norm in set(res["readers"].values()) for key, x in h[norm].items() if np.any(x != (key == "scale"))]
    if inner or np.any(p[res["final_norm"]]["scale"] != 1):
        raise ValueError("rotate a model whose norms are folded (fold_norms) first")


def rotation_basis(d: int) -> np.ndarray:
    """An orthonormal ``(D, D)`` basis whose first column is ``𝟙/√D``."""
    q, _ = np.linalg.qr(np.column_stack([np.ones(d), np.eye(d)[:, : d - 1]]))
    return q * np.sign(q[0, 0])


def rotate_residual(params: dict, rotation_DxD: np.ndarray, cfg: LMConfig) -> dict:
    """The residual stream rotated, ``x ↦ xR``: embeddings, head, a final LayerNorm's bias and the writers times R
    on the right, readers times Rᵀ on the left. Needs folded norms, and ``R𝟙 = 𝟙`` for LayerNorm families."""
    res = models.family(cfg).RESIDUAL
    p = _numpy(params)
    _check_folded(p, res)
    r = np.asarray(rotation_DxD, dtype=np.float64)
    ones = np.ones(r.shape[0])
    if not np.allclose(r @ r.T, np.eye(len(r)), atol=1e-6):
        raise ValueError("the residual rotation must be orthogonal")
    if res["norm"] == "layer" and not np.allclose(r @ ones, ones, atol=1e-6):
        raise ValueError("the residual rotation must fix 𝟙 (R𝟙 = 𝟙): LayerNorm centres along 𝟙")
    for key in (*res["embeddings"], res["head"]):
        p[key] = p[key] @ r
    if "bias" in p[res["final_norm"]]:
        p[res["final_norm"]]["bias"] = p[res["final_norm"]]["bias"] @ r
    h = p[res["layers"]]
    for block, name in res["readers"]:
        h[block][name]["kernel"] = np.einsum("ed,leo->ldo", r, h[block][name]["kernel"])
    for block, name in res["writers"]:
        layer = h[block][name]
        layer.update({key: layer[key] @ r for key in ("kernel", "bias") if key in layer})
    return _cast_like(p, params)


def permute(params: dict, cfg: LMConfig, perms: dict[str, np.ndarray]) -> dict:
    """The family's permutations (``symmetry(cfg)``) applied: slot j receives B's ``perm[j]`` (:func:`connect.symmetry.permute`)."""
    return symmetry.permute(params, _spec(cfg), perms)


def match_permutations(params_a: dict, params_b: dict, cfg: LMConfig) -> dict[str, np.ndarray]:
    """Per layer, each permutation of B maximising ``⟨θ_A, π(θ_B)⟩`` (exact LAPs, :func:`connect.symmetry.match`)."""
    return symmetry.match(params_a, params_b, _spec(cfg))


def _spec(cfg: LMConfig) -> dict:
    return symmetry.spec(models.family(cfg).symmetry(cfg))


def match_rotation(params_a: dict, params_b: dict, cfg: LMConfig) -> np.ndarray:
    """The orthogonal ``R`` maximising ``⟨θ_A, R(θ_B)⟩`` (Procrustes; restricted to ``R𝟙 = 𝟙`` for LayerNorm)."""
    res = models.family(cfg).RESIDUAL
    a, b = _numpy(params_a), _numpy(params_b)
    d = a[res["head"]].shape[1]
    g = np.zeros((d, d))
    for key in (*res["embeddings"], res["head"]):
        g += b[key].T @ a[key]  # writers M: ⟨M_A, M_B R⟩ = ⟨M_Bᵀ M_A, R⟩
    if "bias" in a[res["final_norm"]]:
        g += np.outer(b[res["final_norm"]]["bias"], a[res["final_norm"]]["bias"])
    ha, hb = a[res["layers"]], b[res["layers"]]
    for block, name in res["writers"]:
        la, lb = ha[block][name], hb[block][name]
        g += np.einsum("lid,lie->de", lb["kernel"], la["kernel"])
        if "bias" in la:
            g += np.einsum("ld,le->de", lb["bias"], la["bias"])
    for block, name in res["readers"]:  # readers K: ⟨K_A, Rᵀ K_B⟩ = ⟨K_B K_Aᵀ, R⟩
        g += np.einsum("ldo,leo->de", hb[block][name]["kernel"], ha[block][name]["kernel"])
    if res["norm"] != "layer":
        u, _, vt = np.linalg.svd(g)
        return u @ vt
    basis = rotation_basis(d)
    u, _, vt = np.linalg.svd((basis.T @ g @ basis)[1:, 1:])
    inner = np.eye(d)
    inner[1:, 1:] = u @ vt
    return basis @ inner @ basis.T


def distance(params_a: dict, params_b: dict) -> float:
    """``‖θ_A − θ_B‖₂`` over every array."""
    sq = jax.tree.map(lambda x, y: float(np.sum((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2)), params_a, params_b)
    return float(np.sqrt(sum(jax.tree.leaves(sq))))


def align(params_a: dict, params_b: dict, cfg: LMConfig, *, rotate: bool = True, max_iters: int = 10) -> Alignment:
    """Fold both models' norms, then alternate permutation matching and (when ``rotate``) the residual rotation
    until the permutations repeat (``converged``) or ``max_iters`` iterations; B's function is unchanged throughout.
    ``report`` lists the distance ``‖θ̃_A − T(θ̃_B)‖`` of the folded trees before and after each step."""
    if max_iters < 1:
        raise ValueError(f"max_iters={max_iters}: align needs at least one iteration")
    a, cfg_f = fold_norms(params_a, cfg)
    b, _ = fold_norms(params_b, cfg)
    if jax.tree.structure(a) != jax.tree.structure(b) or any(x.shape != y.shape for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))):
        raise UserError("the two models have different architectures: align checkpoints of the same config")
    rot = np.eye(cfg.d_model)
    moved = (lambda p: rotate_residual(p, rot, cfg_f)) if rotate else (lambda p: p)
    report = [{"step": "folded", "iteration": 0, "distance": distance(a, b)}]
    perms: dict | None = None
    converged, it = False, 0
    while not converged and it < max_iters:
        it += 1
        new = match_permutations(a, moved(b), cfg_f)
        permuted = permute(b, cfg_f, new)
        report.append({"step": "permute heads and MLP units", "iteration": it, "distance": distance(a, moved(permuted))})
        # Without rotation each layer's assignment is exact at once; with it, the rotation is a function of
        # the permutations, so permutations that repeat are a fixed point.
        converged = not rotate or (perms is not None and all(np.array_equal(new[k], perms[k]) for k in new))
        perms = new
        if rotate:
            rot = match_rotation(a, permuted, cfg_f)
            report.append({"step": "rotate residual stream", "iteration": it, "distance": distance(a, moved(permuted))})
    out = moved(permute(b, cfg_f, perms))
    changes = (FOLDED, UNTIED) if cfg.tie_word_embeddings else (FOLDED,)
    return Alignment(a, out, cfg_f, perms, rot, report, converged=bool(converged), iterations=it,
                     distance_unfolded=distance(params_a, params_b), input_cfg=cfg, architecture_changes=changes)
