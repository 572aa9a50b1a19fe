"""Zero-barrier paths of the small-width example (THEORY.md §E, §F.8) at widths 3 and 4: the two
width-2 zero-loss points that the certificate of :mod:`theory.certificate` separates at width 2
are joined at zero loss once one or two more neurons are available.

* width ≥ 4: the points occupy disjoint slots and the √-merge P5 of THEORY.md §D
  (:func:`theory.constructive.sqrt_merge`) gives ``ŷ(t) = (1−t)ŷ_A + tŷ_B = y``.
* width 3, the *shared-pattern merge* [R, derived here]: in ``z = c e(φ)`` coordinates a neuron
  of activation pattern D contributes ``D X z``, linear on the convex cone ``±K_D``, so a neuron
  of A and one of B with the same pattern and the same sign of c share one slot along the
  segment between their ``z``; the others fade and grow by the √-schedule.

Each path is evaluated by the ordinary forward pass (:func:`theory.example.path_losses`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from theory import constructive
from theory import example as ex


def embed(params: dict, slots, width: int) -> dict:
    """A width-2 network placed in ``slots`` of a width-``width`` one (other neurons zero)."""
    w, a = np.zeros((width, 2)), np.zeros(width)
    w[list(slots)], a[list(slots)] = np.asarray(params["W"]), np.asarray(params["a"])
    return {"W": w, "a": a}


def wide_path(config_a: dict, config_b: dict, width: int, n_t: int = 2001) -> dict:
    """A zero-loss path between two width-2 zero-loss configurations embedded at ``width`` ≥ 3.

    * width ≥ 4: A in slots (0, 1), B in slots (2, 3) and the √-merge P5
      (:func:`theory.constructive.sqrt_merge`): ``ŷ(t) = (1−t)ŷ_A + tŷ_B = y``.
    * width 3 (*shared-pattern merge*): if a neuron i of A and a neuron k of B have the same
      activation pattern D and the same sign of c, then in ``z = c e(φ)`` coordinates their
      contributions ``D X z`` are linear on the convex cone ``±K_D``; slot 1 carries
      ``z(t) = (1−t) z_i^A + t z_k^B`` (balanced), while the other neuron of A fades as
      ``√(1−t)·`` in slot 0 and the other of B grows as ``√t·`` in slot 2, so
      ``ŷ(t) = (1−t)ŷ_A + tŷ_B = y`` again.

    Evaluated at ``n_t`` values of t by :func:`connect.models.relu.apply`; returns the path, its
    losses and ``barrier = max_t L − max(L_A, L_B)``, and ``max_abs_c`` along it."""
    ts = np.linspace(0.0, 1.0, n_t)
    if width >= 4:
        pa, pb = embed(config_a["params"], (0, 1), width), embed(config_b["params"], (2, 3), width)
        with jax.enable_x64(True):
            pts = [constructive.sqrt_merge({k: jnp.asarray(v) for k, v in pa.items()}, {k: jnp.asarray(v) for k, v in pb.items()}, t)
                   for t in ts]
        params_T = {k: np.stack([np.asarray(p[k]) for p in pts]) for k in ("W", "a")}
        how = "sqrt_merge"
    elif width == 3:
        params_T, how = _shared_pattern_merge(config_a, config_b, ts)
    else:
        raise ValueError("wide_path is for widths ≥ 3 (width 2 is the certified barrier)")
    x, y = ex.data()
    loss_T = ex.path_losses(params_T, x, y)
    c_TxM = np.asarray(params_T["a"]) * np.linalg.norm(params_T["W"], axis=-1)
    return {"width": width, "how": how, "ts": ts, "params_T": params_T, "loss_T": loss_T,
            "barrier": float(loss_T.max() - max(loss_T[0], loss_T[-1])), "max_abs_c": float(np.abs(c_TxM).max())}


def _shared_pattern_merge(config_a, config_b, ts):
    x, _ = ex.data()
    z_a = config_a["c"][:, None] * np.stack([np.cos(config_a["phi"]), np.sin(config_a["phi"])], -1)
    z_b = config_b["c"][:, None] * np.stack([np.cos(config_b["phi"]), np.sin(config_b["phi"])], -1)
    for i in range(2):
        for k in range(2):
            same = np.array_equal(x @ z_a[i] / config_a["c"][i] > 0, x @ z_b[k] / config_b["c"][k] > 0)
            if same and np.sign(config_a["c"][i]) == np.sign(config_b["c"][k]):
                z_T = (1 - ts)[:, None] * z_a[i][None] + ts[:, None] * z_b[k][None]
                c_mid = np.sign(config_a["c"][i]) * np.linalg.norm(z_T, axis=1)
                phi_mid = np.arctan2(np.sign(c_mid) * z_T[:, 1], np.sign(c_mid) * z_T[:, 0])
                c_T = np.stack([(1 - ts) * config_a["c"][1 - i], c_mid, ts * config_b["c"][1 - k]], 1)
                phi_T = np.stack([np.full_like(ts, config_a["phi"][1 - i]), phi_mid, np.full_like(ts, config_b["phi"][1 - k])], 1)
                params_T = ex.network(c_T, phi_T)
                # exact endpoints: the shared neuron sits in slot 1, A's other in slot 0, B's other in slot 2
                for t_idx, conf, shared, other in ((0, config_a, i, 0), (-1, config_b, k, 2)):
                    slots = (1, other) if shared == 0 else (other, 1)
                    end = embed(conf["params"], slots, 3)
                    params_T["W"][t_idx], params_T["a"][t_idx] = end["W"], end["a"]
                return params_T, f"shared_pattern(A{i}, B{k})"
    raise ValueError("no neuron of A shares an activation pattern and sign with one of B: no width-3 merge")
