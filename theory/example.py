"""The small-width example of THEORY.md §E: its data, every zero-loss configuration, the
constraint region each lies in, and where trained networks land.

Data: d = 2, no bias, n = 4 points on the unit circle at angles ``θ_i`` = (−78°, 7°, 43°, 143°),
targets ``y`` = (0.40, 0.55, 0.85, 0.40), squared loss ``L = (1/2n) Σ_i (f(x_i) − y_i)²``
(:func:`connect.twolayer.losses.mse`). Decays: AdamW ``λ_A = 1/√0.9`` (box, ``r_A² = 0.9``), Muon-full
``λ_M = 1/√1.6`` (``r_M² = 1.6``), Muon-hybrid ``λ_H = 1/√1.2`` (``r_H² = 1.2``).

Quotient coordinates (THEORY.md §E). A neuron ``(w_j, a_j)`` modulo the rescaling
``(s w_j, a_j/s)`` is ``c_j = a_j‖w_j‖₂`` and ``φ_j = angle(w_j)``; with ``e(φ) = (cos φ, sin φ)``
and ``x_i = e(θ_i)``, ``a_j (w_jᵀx_i)_+ = c_j (e(φ_j)ᵀe(θ_i))_+ = c_j cos(θ_i − φ_j)_+``, so

    f(x_i) = Σ_j c_j cos(θ_i − φ_j)_+.                                          (E.1)

A network is recovered balanced: ``w_j = √|c_j| e(φ_j)``, ``a_j = sign(c_j) √|c_j|``.

Zero-loss configurations (exact for d = 2). With ``z_j = c_j e(φ_j)`` a neuron contributes
``c_j (X e(φ_j))_+ = D_j X z_j`` where ``D_j = diag(1[X e(φ_j) > 0])`` is its activation
pattern, and ``z_j`` must lie in the closed cone ``s_j K_{D_j}``, ``K_D = {u : (2D − I)Xu ≥ 0}``,
``s_j = sign(c_j)`` (THEORY.md §A). In d = 2 the pattern of ``e(φ)`` changes only at
``φ = θ_i ± 90°``, so the 2n arcs between these angles give every pattern. Zero loss at
width 2 is ``D_1 X z_1 + D_2 X z_2 = y`` with the cone constraints: for each ordered pattern
pair and sign pair a linear feasibility problem (an LP, scipy's HiGHS) which, when the
4×4 matrix ``[D_1X, D_2X]`` has rank 4 = n, has the unique solution ``z`` of the linear
system. Consistent rank-deficient systems would give a continuum of zero-loss points: they are
detected and reported (``degenerate``), none occur for these data.

Regions. The box orbit and the hybrid orbit have closed forms
(:meth:`connect.constraints.ConstraintSet.orbit_relative`); Muon-full orbit membership (THEORY.md
§B: a rescaling lies in ``{‖W‖₂ ≤ s/λ, ‖a‖₂ ≤ 1/λ}`` iff some ``t ≥ 0`` has ``Σ t_j ≤ r_a²`` and
``Σ_j v_j v_jᵀ/t_j ⪯ r_W² I``, ``v_j = |a_j| w_j``) is the small SDP of
:func:`theory.orbits.muon_full_orbit_relative`. Each orbit-relative norm is ≤ 1 exactly when
some rescaling of the network lies in the set.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

from connect import optimizers
from connect.constraints import ConstraintSet
from connect.models import relu
from connect.twolayer import losses, training
from theory import orbits

ANGLES_DEG = (-78.0, 7.0, 43.0, 143.0)
TARGETS = (0.40, 0.55, 0.85, 0.40)
LAM_ADAMW = 1.0 / np.sqrt(0.9)
LAM_MUON_FULL = 1.0 / np.sqrt(1.6)
LAM_HYBRID = 1.0 / np.sqrt(1.2)
#: Which set each region name means, at its decay.
REGIONS = {
    "box": ConstraintSet("linf", LAM_ADAMW),
    "muon_full": ConstraintSet("muon_full", LAM_MUON_FULL, ("W",)),
    "hybrid": ConstraintSet("muon", LAM_HYBRID, ("W",)),
}


def data() -> tuple[np.ndarray, np.ndarray]:
    """``(x_NxD, y_N)`` of §E in float64: ``x_i = (cos θ_i, sin θ_i)``."""
    theta = np.deg2rad(np.asarray(ANGLES_DEG))
    return np.stack([np.cos(theta), np.sin(theta)], axis=1), np.asarray(TARGETS, dtype=np.float64)


def quotient(params: dict) -> tuple[np.ndarray, np.ndarray]:
    """``(c_M, φ_M)`` with ``c_j = a_j‖w_j‖₂``, ``φ_j = atan2(w_j2, w_j1) ∈ (−π, π]`` (d = 2)."""
    w, a = np.asarray(params["W"], dtype=np.float64), np.asarray(params["a"], dtype=np.float64)
    return a * np.linalg.norm(w, axis=1), np.arctan2(w[:, 1], w[:, 0])


def network(c_M, phi_M) -> dict:
    """The balanced network of quotient point ``(c, φ)``: ``w_j = √|c_j| e(φ_j)``,
    ``a_j = sign(c_j)√|c_j|`` (numpy float64; any batch axes lead)."""
    c_M, phi_M = np.asarray(c_M, dtype=np.float64), np.asarray(phi_M, dtype=np.float64)
    root = np.sqrt(np.abs(c_M))
    return {"W": np.stack([np.cos(phi_M), np.sin(phi_M)], axis=-1) * root[..., None], "a": np.sign(c_M) * root}


def quotient_forward(c_M, phi_M, theta_N) -> np.ndarray:
    """(E.1) ``f(x_i) = Σ_j c_j cos(θ_i − φ_j)_+``, shape ``(..., N)``."""
    c_M, phi_M = np.asarray(c_M), np.asarray(phi_M)
    feats = np.maximum(np.cos(np.asarray(theta_N)[:, None] - phi_M[..., None, :]), 0.0)
    return (feats * c_M[..., None, :]).sum(-1)


def loss(f_N, y_N) -> np.ndarray:
    """``L = (1/2n) Σ (f_i − y_i)²`` over the last axis (numpy twin of :func:`connect.twolayer.losses.mse`)."""
    return 0.5 * np.mean((np.asarray(f_N) - np.asarray(y_N)) ** 2, axis=-1)


def forward_loss(params: dict, x_NxD, y_N) -> float:
    """Loss by the ordinary forward pass :func:`connect.models.relu.apply` in float64."""
    with jax.enable_x64(True):
        p = {k: jnp.asarray(np.asarray(v), dtype=jnp.float64) for k, v in params.items()}
        return float(losses.mse(relu.apply(p, jnp.asarray(x_NxD, dtype=jnp.float64)), jnp.asarray(y_N, dtype=jnp.float64)))


def path_losses(params_T: dict, x_NxD, y_N) -> np.ndarray:
    """Loss at every point of a stacked parameter path, by :func:`connect.models.relu.apply` (float64)."""
    with jax.enable_x64(True):
        p = {k: jnp.asarray(v, jnp.float64) for k, v in params_T.items()}
        x, y = jnp.asarray(x_NxD, jnp.float64), jnp.asarray(y_N, jnp.float64)
        return np.asarray(jax.vmap(lambda q: losses.mse(relu.apply(q, x), y))(p))


def activation_patterns(x_NxD: np.ndarray) -> np.ndarray:
    """Every activation pattern ``1[X e(φ) > 0]`` over φ ∈ [0, 2π), shape ``(P, N)`` bool, from
    the midpoints of the arcs between the breakpoints ``θ_i ± π/2`` (exact for d = 2)."""
    x_NxD = np.asarray(x_NxD, dtype=np.float64)
    if x_NxD.shape[1] != 2:
        raise ValueError("pattern enumeration by angles needs d = 2")
    theta = np.arctan2(x_NxD[:, 1], x_NxD[:, 0])
    bp = np.unique(np.mod(np.concatenate([theta + np.pi / 2, theta - np.pi / 2]), 2 * np.pi))
    mids = bp + np.diff(np.append(bp, bp[0] + 2 * np.pi)) / 2
    pats = (x_NxD @ np.stack([np.cos(mids), np.sin(mids)])).T > 0
    return np.unique(pats, axis=0)


def _canonical(c_M, phi_M) -> tuple[np.ndarray, np.ndarray]:
    """Representative modulo neuron swap: zero neurons get φ = 0, neurons sorted by (φ, c)."""
    c_M = np.where(np.abs(c_M) > 0, c_M, 0.0)
    phi_M = np.where(c_M != 0, np.mod(phi_M + np.pi, 2 * np.pi) - np.pi, 0.0)
    order = np.lexsort((c_M, phi_M))
    return c_M[order], phi_M[order]


def _feasible_point(m_NxK: np.ndarray, y_N: np.ndarray, cones: list[np.ndarray], tol: float) -> np.ndarray | None:
    """A point of ``{z : M z = y, G_j z_j ≥ 0}`` (HiGHS LP with zero objective), or None."""
    n_k = m_NxK.shape[1]
    g = np.zeros((sum(len(c) for c in cones), n_k))
    row = 0
    for j, cone in enumerate(cones):
        g[row : row + len(cone), 2 * j : 2 * j + 2] = cone
        row += len(cone)
    res = scipy.optimize.linprog(np.zeros(n_k), A_ub=-g, b_ub=np.full(len(g), tol), A_eq=m_NxK, b_eq=y_N,
                                 bounds=[(None, None)] * n_k, method="highs")
    return res.x if res.status == 0 else None


def zero_loss_configurations(x_NxD=None, y_N=None, tol: float = 1e-12) -> dict:
    """Every zero-loss configuration of a width-2 network modulo rescaling and neuron swap
    (module docstring): ``{"configs": [{"c", "phi", "params", "loss", "patterns"}], "degenerate":
    [pattern pairs with a continuum of solutions]}``. Each config's loss is recomputed by the
    ordinary forward pass (:func:`forward_loss`) and must be ≤ ``tol``."""
    if x_NxD is None:
        x_NxD, y_N = data()
    x_NxD, y_N = np.asarray(x_NxD, dtype=np.float64), np.asarray(y_N, dtype=np.float64)
    n = len(y_N)
    pats = activation_patterns(x_NxD)
    found, degenerate = [], []
    for (p1, d1), (p2, d2) in itertools.product(enumerate(pats), repeat=2):
        m_NxK = np.concatenate([d1[:, None] * x_NxD, d2[:, None] * x_NxD], axis=1)
        rank = np.linalg.matrix_rank(m_NxK)
        for s1, s2 in itertools.product((1.0, -1.0), repeat=2):
            cones = [s1 * (2 * d1[:, None] - 1) * x_NxD, s2 * (2 * d2[:, None] - 1) * x_NxD]
            z = _feasible_point(m_NxK, y_N, cones, 1e-13)
            if z is None:
                continue
            if rank < min(n, 4):
                degenerate.append({"patterns": (int(p1), int(p2)), "signs": (s1, s2), "rank": int(rank)})
                continue
            z = np.linalg.lstsq(m_NxK, y_N, rcond=None)[0]  # the unique solution, to round-off
            zz = z.reshape(2, 2)
            c = np.array([s1, s2]) * np.linalg.norm(zz, axis=1)
            phi = np.array([np.arctan2(s1 * zz[0, 1], s1 * zz[0, 0]), np.arctan2(s2 * zz[1, 1], s2 * zz[1, 0])])
            found.append((*_canonical(c, phi), (int(p1), int(p2))))
    configs = []
    for c, phi, pp in found:
        if any(np.allclose(c, k["c"], atol=1e-9) and np.allclose(phi, k["phi"], atol=1e-9) for k in configs):
            continue
        params = network(c, phi)
        lo = forward_loss(params, x_NxD, y_N)
        if not lo <= tol:
            raise AssertionError(f"configuration c={c}, φ={phi} has loss {lo:.3g} > {tol:g}")
        configs.append({"c": c, "phi": phi, "params": params, "loss": lo, "patterns": pp})
    return {"configs": configs, "degenerate": degenerate}


def regions(configs: list[dict]) -> list[dict]:
    """For each configuration, the orbit-relative norm (≤ 1 ⇔ in the orbit) and membership of
    the box at λ_A, Muon-full at λ_M and Muon-hybrid at λ_H (:data:`REGIONS`)."""
    out = []
    for k in configs:
        with jax.enable_x64(True):
            p = {key: jnp.asarray(val) for key, val in k["params"].items()}
            box = float(REGIONS["box"].orbit_relative(p))
            hyb = float(REGIONS["hybrid"].orbit_relative(p))
        full = orbits.muon_full_orbit_relative(k["params"], LAM_MUON_FULL)[0]
        out.append({"box": box, "muon_full": full, "hybrid": hyb,
                    "in_box": box <= 1.0, "in_muon_full": full <= 1.0, "in_hybrid": hyb <= 1.0})
    return out


def quotient_distance(c_a, phi_a, c_b, phi_b) -> float:
    """Distance in quotient coordinates modulo neuron swap: ``min_π ‖(c_a − c_b^π, wrap(φ_a − φ_b^π))‖₂``
    (angles wrapped to (−π, π]; angles of zero neurons do not count)."""
    best = np.inf
    for perm in itertools.permutations(range(len(c_a))):
        cb, pb = np.asarray(c_b)[list(perm)], np.asarray(phi_b)[list(perm)]
        dphi = np.mod(np.asarray(phi_a) - pb + np.pi, 2 * np.pi) - np.pi
        dphi = np.where((np.asarray(c_a) == 0) & (cb == 0), 0.0, dphi)
        best = min(best, float(np.sqrt(np.sum((np.asarray(c_a) - cb) ** 2) + np.sum(dphi ** 2))))
    return best


#: Decay each trained optimizer uses by default: AdamW the box's λ_A; the registry's Muon
#: (Newton–Schulz ``muon`` and exact-msign ``muon_exact``) is Muon on W and AdamW on a — the
#: hybrid set — so λ_H; ``muon_full`` (exact msign on W and on the row a) λ_M.
DEFAULT_LAM = {"adamw": LAM_ADAMW, "muon": LAM_HYBRID, "muon_exact": LAM_HYBRID, "muon_full": LAM_MUON_FULL}


def train_runs(optimizer: str, seeds, width: int = 2, steps: int = 4000, lr: float = 0.01, lam: float | None = None,
               configs: list[dict] | None = None) -> dict:
    """Train ``width``-neuron networks (no bias) from each seed with :func:`connect.twolayer.training.train`
    (full batch, float64, constant ``lr``, decoupled decay ``lam``, default :data:`DEFAULT_LAM`)
    and say where each lands: final loss, quotient point, nearest zero-loss configuration
    (:func:`quotient_distance`, width 2), and the relative norms of the box, hybrid and Muon-full
    sets (plain and orbit)."""
    lam = DEFAULT_LAM[optimizer] if lam is None else float(lam)
    x_np, y_np = data()
    cfg = relu.ReluConfig(d_in=2, width=width, bias=False)
    opt = optimizers.make(optimizer, lr, lam, relu.MUON_MATRICES)
    with jax.enable_x64(True):
        x, y = jnp.asarray(x_np), jnp.asarray(y_np)
        params_S, loss_SxT = training.train(_Init(cfg), _mse, opt, list(seeds), x, y, steps)
        params_S = jax.tree.map(np.asarray, params_S)
    if configs is None and width == 2:
        configs = zero_loss_configurations()["configs"]
    rows = []
    for i in range(len(seeds)):
        p = {k: v[i] for k, v in params_S.items()}
        c, phi = quotient(p)
        row = {"seed": int(seeds[i]), "loss": forward_loss(p, x_np, y_np), "c": c, "phi": phi, "params": p}
        with jax.enable_x64(True):
            pj = {k: jnp.asarray(v) for k, v in p.items()}
            for name, cset in REGIONS.items():
                if name != "muon_full":
                    row[f"{name}_relative"] = float(cset.relative_norm(pj))
                    row[f"{name}_orbit"] = float(cset.orbit_relative(pj))
            row["muon_full_relative"] = float(REGIONS["muon_full"].relative_norm(pj))
        row["muon_full_orbit"] = orbits.muon_full_orbit_relative(p, LAM_MUON_FULL)[0]
        if configs:
            dist = [quotient_distance(c, phi, k["c"], k["phi"]) for k in configs]
            row["nearest"], row["distance"] = int(np.argmin(dist)), float(np.min(dist))
        rows.append(row)
    return {"optimizer": optimizer, "lam": lam, "lr": lr, "steps": steps, "width": width, "runs": rows,
            "loss_curves": np.asarray(loss_SxT)}


class _Init:
    """``key -> relu.init(key, cfg)``, hashable by its config (a static argument of the jitted trainer)."""

    def __init__(self, cfg: relu.ReluConfig):
        self.cfg = cfg

    def __call__(self, key):
        return relu.init(key, self.cfg)

    def __hash__(self):
        return hash(self.cfg)

    def __eq__(self, other):
        return isinstance(other, _Init) and other.cfg == self.cfg


def _mse(params, x, y):
    return losses.mse(relu.apply(params, x), y)
