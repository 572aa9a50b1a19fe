"""Paths between language-model checkpoints of one family: losses along them, barriers, ensembles, learned
bends, spectra.

A path is :mod:`connect.paths`' stacked nodes ``[θ_A, θ_1, …, θ_B]`` over a parameter tree of any family of
:mod:`connect.models` (GPT-2, Llama/Qwen2/Mistral, GPT-NeoX). Along it, on a t-grid (default 0, 0.1, …, 1):

* **val loss** ``L(θ(t)) = −(1/N) Σ_i log p_θ(t)(y_i | x_{≤i})`` over the ``N`` target tokens of the
  consecutive windows of :func:`connect.lm.corpus.eval_batches` (every token weighted equally, as
  :func:`connect.lm.training.evaluate`). The points are built on the device (:func:`connect.paths.point`)
  ``t_chunk`` at a time, and one compiled program takes a data batch and returns the summed negative
  log-likelihood at every point of the chunk (``vmap``; on CPU the head's logits are never stored,
  :func:`connect.models.token_nll`); the batch axis is sharded over a 1-D mesh named ``data`` (params fully
  sharded over it, :mod:`connect.sharding`), so XLA sums across devices; without a mesh on a CPU backend, up to
  4 batches run at once on host threads (:func:`cpu_streams`). The last, short batch is padded with zero-weight
  rows, so one shape compiles and every device gets whole rows;
* **barriers** (:mod:`connect.barrier`): the seed's ``max_t [L(t) − ((1−t)L(0) + tL(1))]`` and
  ``max_t L(t) − max(L(0), L(1))``, on the val split and, when given, on a second corpus (out of
  distribution);
* **ensembles**: the loss of averaged predictions ``p̄ = (1/M) Σ_m p_m`` (Garipov et al. 2018, §5),
  ``−(1/N) Σ_i log p̄(y_i)``, computed as ``log p̄ = logsumexp_m log p_m − log M``, for the endpoints,
  for the best interior grid point (lowest val loss, chosen on the same data), and for the
  endpoints plus that point;
* **spectra** of every weight matrix (:func:`spectra_along_path`, :func:`connect.spectra.along_path`), named by the
  family's ``matrix_names`` as Hugging Face names the layers: GPT-2's ``h.{l}.attn.q``, ``.k``, ``.v`` (the three
  blocks of ``c_attn``), ``h.{l}.attn.c_proj``, ``h.{l}.mlp.c_fc``, ``h.{l}.mlp.c_proj``, ``wte``, ``wpe``, ``lm_head``;
  Llama's ``layers.{l}.self_attn.q_proj``, …, ``layers.{l}.mlp.down_proj``, ``embed_tokens``, ``lm_head``.

:func:`learn_path` learns the free nodes on random training windows (:func:`connect.paths.fit`
with ``batch_fn`` = :func:`connect.lm.corpus.batch`), by default with the endpoints' optimizer of
:func:`connect.optimizers.make_lm` (the "optimizer-restricted" path).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from connect import barrier, models, optimizers, paths, sharding, spectra
from connect.errors import UserError
from connect.lm import corpus
from connect.models import LMConfig

# --- checks ---------------------------------------------------------------------------------------


def load_pair(path_a: str, path_b: str) -> tuple[dict, dict, LMConfig]:
    """Two checkpoints (:func:`connect.lm.training.load`: connect or Hugging Face) and their common config."""
    from connect.lm import training as lm_training

    (theta_a, cfg_a), (theta_b, cfg_b) = lm_training.load(path_a), lm_training.load(path_b)
    return theta_a, theta_b, check_pair(theta_a, cfg_a, theta_b, cfg_b)


def check_pair(theta_a, cfg_a: LMConfig, theta_b, cfg_b: LMConfig) -> LMConfig:
    """The common config of two checkpoints, after checking both trees have its arrays and shapes."""
    if cfg_a != cfg_b:
        diff = [f"{f.name} {getattr(cfg_a, f.name)} vs {getattr(cfg_b, f.name)}" for f in dataclasses.fields(cfg_a)
                if getattr(cfg_a, f.name) != getattr(cfg_b, f.name)]
        raise UserError(f"the two checkpoints have different GPT-2 configs ({', '.join(diff)}): "
                        "a path needs two models of the same architecture")
    want = jax.eval_shape(lambda: models.family(cfg_a).init(jax.random.key(0), cfg_a))
    for label, theta in (("first", theta_a), ("second", theta_b)):
        got = {_join(p): tuple(np.shape(x)) for p, x in jax.tree_util.tree_leaves_with_path(theta)}
        for p, x in jax.tree_util.tree_leaves_with_path(want):
            if got.get(_join(p)) != tuple(x.shape):
                raise UserError(f"the {label} checkpoint's {_join(p)} has shape {got.get(_join(p))}, its config needs "
                                f"{tuple(x.shape)}: pass a checkpoint that matches its config")
    return cfg_a


def check_grid(ts_T) -> np.ndarray:
    """A t-grid as float32, every t in [0, 1] (a UserError otherwise)."""
    ts_T = np.atleast_1d(np.asarray(ts_T, dtype=np.float32))
    if ts_T.ndim != 1 or ts_T.size == 0 or not np.all(np.isfinite(ts_T)):
        raise UserError(f"the t-grid must be a non-empty list of numbers, got {ts_T.tolist()}")
    if np.any(ts_T < 0) or np.any(ts_T > 1):
        bad = [float(t) for t in ts_T if not 0 <= t <= 1]
        raise UserError(f"t = {bad} lies outside [0, 1]: a path is defined for 0 <= t <= 1 only")
    return ts_T


def _check_eval(model_cfg, batch_size: int, context: int, mesh: Mesh | None) -> None:
    models.family(model_cfg).check_context(model_cfg, context)
    n_dev = 1 if mesh is None else mesh.devices.size
    if batch_size % n_dev:
        raise UserError(f"batch_size {batch_size} is not divisible by the {n_dev} devices of the mesh: use a multiple of {n_dev}")


# --- losses along a path ----------------------------------------------------------------------------


def path_losses(kind: str, nodes_K, model_cfg: LMConfig, tokens: np.ndarray, ts_T, *, batch_size: int,
                context: int, max_batches: int | None = None, mesh: Mesh | None = None, t_chunk: int | None = None,
                compute_dtype=jnp.float32) -> np.ndarray:
    """Mean next-token loss (nats) of ``θ(t)`` at every t of ``ts_T`` on ``tokens``, shape ``(T,)``.

    ``t_chunk`` points are evaluated together under ``vmap`` (default: 1 on CPU, where batching does
    not pay; on accelerators all T, or as many as keep the chunk's float32 logits within
    :data:`LOGITS_BUDGET_BYTES`); ``mesh`` shards the data batch over its ``data`` axis and every node's arrays fully over the same axis
    (:mod:`connect.sharding`: each device holds 1/n of the model, so a model too large to copy onto every device
    runs; a mesh may span the processes of a ``jax.distributed`` run: every process passes the same arguments and
    gets the same losses).
    """
    ts_T = check_grid(ts_T)
    _check_eval(model_cfg, batch_size, context, mesh)
    n_t = ts_T.size
    chunk = t_chunk or _default_chunk(n_t, batch_size, context, model_cfg.vocab_size)
    n_chunks = -(-n_t // chunk)
    ts_NxC = np.concatenate([ts_T, np.full(n_chunks * chunk - n_t, ts_T[-1], np.float32)]).reshape(n_chunks, chunk)
    nodes_K = sharding.put(nodes_K, mesh)  # fully sharded: each device holds 1/n of every node
    dtype_name = jnp.dtype(compute_dtype).name
    losses = []
    for ts_C in ts_NxC:  # the chunk's points are built once, then every data batch is evaluated at all of them
        fn = functools.partial(_points_nll, model_cfg, dtype_name, _points(kind, nodes_K, jnp.asarray(ts_C)))
        losses.append(_over_data(fn, tokens, batch_size, context, max_batches, mesh))
    return np.concatenate(losses)[:n_t]


#: Default cap on the float32 logits ``C·B·T·V·4`` bytes of one t-chunk on an accelerator.
LOGITS_BUDGET_BYTES = 8 * 2**30


def _default_chunk(n_t: int, batch_size: int, context: int, vocab_size: int) -> int:
    if jax.default_backend() == "cpu":
        return 1
    return max(1, min(n_t, LOGITS_BUDGET_BYTES // (4 * batch_size * context * vocab_size)))


def ensemble_loss(members_M, model_cfg: LMConfig, tokens: np.ndarray, *, batch_size: int, context: int,
                  max_batches: int | None = None, mesh: Mesh | None = None, compute_dtype=jnp.float32) -> float:
    """Loss of the averaged predictions of ``M`` models stacked on a leading axis:
    ``−(1/N) Σ_i log((1/M) Σ_m p_m(y_i))`` (see the module docstring)."""
    _check_eval(model_cfg, batch_size, context, mesh)
    fn = functools.partial(_ensemble_nll, model_cfg, jnp.dtype(compute_dtype).name, sharding.put(members_M, mesh))
    return float(_over_data(fn, tokens, batch_size, context, max_batches, mesh)[0])


def evaluate_path(kind: str, nodes_K, model_cfg: LMConfig, tokens: np.ndarray, ts_T=None, *, batch_size: int,
                  context: int, max_batches: int | None = None, mesh: Mesh | None = None, ood_tokens: np.ndarray | None = None,
                  ensembles: bool = True, refine: int = 0, t_chunk: int | None = None, compute_dtype=jnp.float32) -> dict:
    """Val loss at every t, the two barriers, the same on ``ood_tokens`` when given, and ensembles.

    The grid (default :func:`connect.barrier.grid`, 0, 0.1, …, 1) must hold 0 and 1; ``refine`` extra
    points are added around the grid's highest point above the chord (:func:`connect.barrier.refine`),
    separately for each corpus. Returns ``{"t", "loss", "barrier", "max_barrier", "ood": {"t", "loss",
    "barrier", "max_barrier"} | None, "ensemble": {"loss_a", "loss_b", "endpoints", "best_t", "best_point",
    "endpoints_and_best"} | None}`` (plain floats and lists, ready for JSON; t ascending).
    """
    ts_T = check_grid(barrier.grid() if ts_T is None else ts_T)
    if 0.0 not in ts_T or 1.0 not in ts_T:
        raise UserError(f"the t-grid {ts_T.tolist()} must contain both endpoints 0 and 1 for barriers: add them")
    kw = dict(batch_size=batch_size, context=context, max_batches=max_batches, mesh=mesh, compute_dtype=compute_dtype)

    def curve(data):
        loss_T = path_losses(kind, nodes_K, model_cfg, data, ts_T, t_chunk=t_chunk, **kw)
        ts, loss = ts_T, loss_T
        if refine:
            extra = barrier.refine(ts_T, loss_T, refine)
            ts = np.concatenate([ts_T, extra])
            loss = np.concatenate([loss_T, path_losses(kind, nodes_K, model_cfg, data, extra, t_chunk=t_chunk, **kw)])
        order = np.argsort(ts, kind="stable")
        return barrier.curve(ts[order], loss[order])

    out = curve(tokens)
    out["ood"] = None if ood_tokens is None else curve(ood_tokens)
    out["ensemble"] = (_ensembles(kind, nodes_K, model_cfg, tokens, np.asarray(out["t"], np.float32), out["loss"], **kw)
                       if ensembles else None)
    return out


def _ensembles(kind, nodes_K, model_cfg, tokens, ts_T, loss_T, **kw) -> dict:
    """Ensemble losses of the endpoints, of the best interior grid point, of endpoints plus that point."""
    ends = jax.tree.map(lambda x: jnp.stack([x[0], x[-1]]), nodes_K)
    i0, i1 = int(np.flatnonzero(ts_T == 0.0)[0]), int(np.flatnonzero(ts_T == 1.0)[0])
    out = {"loss_a": loss_T[i0], "loss_b": loss_T[i1], "endpoints": ensemble_loss(ends, model_cfg, tokens, **kw),
           "best_t": None, "best_point": None, "endpoints_and_best": None}
    inner = np.flatnonzero((ts_T > 0) & (ts_T < 1))
    if inner.size:
        best = int(inner[np.argmin(np.asarray(loss_T)[inner])])
        theta = _point(kind, nodes_K, jnp.float32(ts_T[best]))
        three = jax.tree.map(lambda e, p: jnp.concatenate([e, p[None]]), ends, theta)
        out.update(best_t=float(ts_T[best]), best_point=loss_T[best], endpoints_and_best=ensemble_loss(three, model_cfg, tokens, **kw))
    return out


_point = jax.jit(paths.point, static_argnums=0)


@functools.partial(jax.jit, static_argnums=0)
def _points(kind, nodes_K, ts_C):
    """``θ(t)`` for every t of a chunk, stacked on a leading axis C."""
    return jax.vmap(lambda t: paths.point(kind, nodes_K, t))(ts_C)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _points_nll(model_cfg, dtype_name, points_C, x_BxT, y_BxT, w_B) -> jax.Array:
    """``Σ_b w_b Σ_i −log p_θ(y_bi)`` for each of C stacked models (vmap), shape ``(C,)``."""

    def nll(params):
        return jnp.sum(models.token_nll(params, x_BxT, y_BxT, model_cfg, jnp.dtype(dtype_name)) * w_B[:, None])

    return jax.vmap(nll)(points_C)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _ensemble_nll(model_cfg, dtype_name, members_M, x_BxT, y_BxT, w_B) -> jax.Array:
    """``Σ_b w_b Σ_i −log((1/M) Σ_m p_m(y_bi))``, shape ``(1,)``; the members one at a time (lax.map)."""
    lp_MxBxT = jax.lax.map(lambda p: -models.token_nll(p, x_BxT, y_BxT, model_cfg, jnp.dtype(dtype_name)), members_M)
    lp_BxT = jax.nn.logsumexp(lp_MxBxT, axis=0) - jnp.log(jnp.float32(lp_MxBxT.shape[0]))
    return -jnp.sum(lp_BxT * w_B[:, None])[None]


def _over_data(fn, tokens, batch_size: int, context: int, max_batches: int | None, mesh: Mesh | None) -> np.ndarray:
    """``Σ_batches fn(x, y, w) / N`` (float64): ``fn`` returns summed NLLs, ``N`` counts the target tokens.
    Short batches are padded to ``batch_size`` rows of weight 0; rows are sharded over ``mesh``."""
    rows_sharding = None if mesh is None else NamedSharding(mesh, PartitionSpec("data"))
    n_tokens = 0

    def batches():  # read lazily, the target tokens counted on the way
        nonlocal n_tokens
        for x_BxT, y_BxT in corpus.eval_batches(tokens, batch_size, context, max_batches):
            n_tokens += x_BxT.shape[0] * context
            yield x_BxT, y_BxT

    def one(xy):
        x_BxT, y_BxT = xy
        rows = x_BxT.shape[0]
        w_B = (np.arange(batch_size) < rows).astype(np.float32)
        pad = ((0, batch_size - rows), (0, 0))
        args = (np.pad(x_BxT, pad), np.pad(y_BxT, pad), w_B)
        return fn(*(args if rows_sharding is None else sharding.put_as(args, rows_sharding)))

    streams = cpu_streams() if mesh is None else 1
    if streams > 1:  # each thread runs one batch's program at a time; the sums are taken in batch order below
        with ThreadPoolExecutor(streams) as pool:
            sums = list(pool.map(lambda xy: jax.block_until_ready(one(xy)), batches()))
    else:
        sums = [one(xy) for xy in batches()]  # dispatched asynchronously
    return np.sum(np.stack([np.asarray(s, np.float64) for s in jax.device_get(sums)]), axis=0) / n_tokens


#: At most this many host threads evaluate data batches at once on a CPU backend.
MAX_CPU_STREAMS = 4


def cpu_streams() -> int:
    """Data batches evaluated at once: on a CPU backend, the cores this process may run on (at most
    :data:`MAX_CPU_STREAMS`), else 1. XLA:CPU runs a program on its calling thread and splits only large products
    over its own threads, so a language model's per-batch programs use one core each; two threads on two cores:
    tiny GPT-2 path evaluation 26 → 16 ms per 8 batches, the mid-size one 218 → 150 ms (``benchmarks/README.md``).
    Every batch's result is the same as one thread's, and they are summed in batch order."""
    if jax.default_backend() != "cpu":
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(MAX_CPU_STREAMS, cores))


# --- learning a path --------------------------------------------------------------------------------


def learn_path(theta_a, theta_b, kind: str, model_cfg: LMConfig, data, *, n_free: int = 1, steps: int = 200,
               batch_size: int = 16, context: int | None = None, t_per_step: int = 1, t_dist=paths.T_UNIFORM,
               optimizer: str | optax.GradientTransformation = "adamw", lr: float = 1e-3, aux_lr: float | None = None,
               weight_decay: float = 0.0, seed: int = 0, mesh: Mesh | None = None, compute_dtype=jnp.float32):
    """Learn the ``n_free`` free nodes of a ``kind`` path between two GPT-2s on training windows:
    minimise ``E_{t~D} L(θ(t); x_k, y_k)`` with step k's batch :func:`connect.lm.corpus.batch` ``(train,
    seed, k, batch_size, context)`` (:func:`connect.paths.fit`, ``batch_fn`` mode).

    ``data`` is a :class:`connect.lm.corpus.Corpus` (its train split is used) or a token array.
    ``optimizer`` is an optax transformation of the free-node tree or a name of
    :data:`connect.optimizers.LM_OPTIMIZERS` built by :func:`connect.optimizers.make_lm` with ``lr``,
    ``aux_lr`` and ``weight_decay`` (the endpoints' optimizer: the optimizer-restricted path).
    A linear path has nothing to learn and is returned as is. Returns ``(nodes_K, objective_per_step)``.
    """
    if kind not in paths.KINDS:
        raise UserError(f"unknown path kind {kind!r}: use one of {', '.join(paths.KINDS)}")
    tokens = data.train if isinstance(data, corpus.Corpus) else data
    context = model_cfg.context_limit if context is None else context
    _check_eval(model_cfg, batch_size, context, mesh)
    theta_a, theta_b = sharding.put((theta_a, theta_b), mesh)
    if kind == "linear":
        return paths.stack_nodes(theta_a, paths.init_free(theta_a, theta_b, 0), theta_b), np.zeros(0, np.float32)
    if n_free < 1:
        raise UserError(f"a learned {kind} path needs at least one free node, got n_free={n_free}")
    if isinstance(optimizer, str):
        optimizer = _path_optimizer(optimizer, model_cfg, n_free, lr, aux_lr, weight_decay)
    rows_sharding = None if mesh is None else NamedSharding(mesh, PartitionSpec("data"))

    def batch_fn(k):
        xy = tuple(jnp.asarray(a) for a in corpus.batch(tokens, seed, k, batch_size, context))
        return xy if rows_sharding is None else sharding.put_as(xy, rows_sharding)

    loss_fn = _batch_loss(model_cfg, jnp.dtype(compute_dtype).name)
    nodes_K, obj = paths.fit(kind, theta_a, theta_b, loss_fn, optimizer, jax.random.key(seed), n_free=n_free, steps=steps,
                             t_per_step=t_per_step, batch_fn=batch_fn, t_dist=t_dist)
    return nodes_K, np.asarray(obj)


@functools.lru_cache(maxsize=16)
def _path_optimizer(name: str, model_cfg: LMConfig, n_free: int, lr: float, aux_lr, weight_decay: float):
    """:func:`connect.optimizers.make_lm` for the free nodes, one object per setting (so that
    :func:`connect.paths.fit` reuses its compiled step across pairs)."""
    free0 = jax.eval_shape(lambda: jax.tree.map(lambda x: jnp.zeros((n_free, *x.shape), x.dtype),
                                                models.family(model_cfg).init(jax.random.key(0), model_cfg)))
    return optimizers.make_lm(name, free0, lr=lr, aux_lr=aux_lr, weight_decay=weight_decay, matrices=models.family(model_cfg).MUON_MATRICES)


@functools.lru_cache(maxsize=16)
def _batch_loss(model_cfg: LMConfig, dtype_name: str):
    """``(θ, (x, y)) -> L``, one function object per model and precision."""
    return lambda theta, xy: models.family(model_cfg).loss(theta, *xy, model_cfg, compute_dtype=jnp.dtype(dtype_name))


#: Learning rates of the hidden matrices when a path is learned, per optimizer (the GPT-2 study's; else 1e-3).
PATH_LR = {"adamw": 1e-3, "muon": 4e-3}


def between(ckpt_a, ckpt_b, kind: str = "linear", *, data=None, ts_T=None, align: bool = False, steps: int = 200,
            optimizer: str | None = None, batch_size: int = 8, context: int | None = None, max_batches: int | None = 16,
            seed: int = 0) -> dict:
    """One call: the loss curve of a ``kind`` path between two GPT-2 checkpoints (``connect train-lm`` or Hugging
    Face directories of one config), with defaults that fit a laptop: ``data`` a :class:`connect.lm.corpus.Corpus`,
    a corpus path or ``None`` (the embedded corpus); ``batch_size`` 8 windows of ``context`` tokens (default
    ``min(context_limit, 256)``), ``max_batches`` 16 of them (``None``: the whole val split); a learned kind's bend
    trained for ``steps`` steps by ``optimizer`` (default: the endpoints' own when both record the same,
    :func:`connect.optimizers.path_optimizer`) at :data:`PATH_LR`. ``align`` first aligns B to A
    (:func:`connect.lm.alignment.align`). Returns :func:`evaluate_path`'s record plus ``nodes``, ``objective``,
    ``path_optimizer`` and ``alignment`` (the alignment's summary, or None)."""
    from connect import checkpoints
    from connect.lm import alignment

    theta_a, theta_b, cfg = load_pair(ckpt_a, ckpt_b)
    corp = data if isinstance(data, corpus.Corpus) else corpus.load(data)
    context = context or min(cfg.context_limit, 256)
    summary = None
    if align:
        al = alignment.align(theta_a, theta_b, cfg)
        theta_a, theta_b, cfg, summary = al.params_a, al.params_b, al.cfg, al.summary()
    name = optimizer or optimizers.path_optimizer(checkpoints.recorded_optimizer(ckpt_a), checkpoints.recorded_optimizer(ckpt_b))
    nodes_K, obj = learn_path(theta_a, theta_b, kind, cfg, corp, steps=steps, batch_size=batch_size, context=context,
                              optimizer=name, lr=PATH_LR.get(name, 1e-3), seed=seed)
    out = evaluate_path(kind, nodes_K, cfg, corp.val, ts_T, batch_size=batch_size, context=context, max_batches=max_batches)
    return {**out, "nodes": nodes_K, "objective": np.asarray(obj).tolist(), "path_optimizer": name, "alignment": summary}


# --- spectra along a path ---------------------------------------------------------------------------


def spectra_along_path(kind: str, nodes_K, model_cfg: LMConfig, ts_T=None, *, names: Sequence[str] | None = None,
                       weight_decay: float = 0.1, constraint_optimizers: Sequence[str] = ("adamw", "muon"),
                       strategy: str = "auto", mesh: Mesh | None = None) -> dict:
    """:func:`connect.spectra.along_path` of the family's matrices ``names`` (default all, its ``matrix_names``;
    the nodes fully sharded over ``mesh`` when given, :mod:`connect.sharding`), with the implicit set of each optimizer of
    ``constraint_optimizers`` at decay ``weight_decay`` (:func:`connect.optimizers.constraint`; Muon's spectral
    ball on the attention and MLP matrices with the shape factor of the ``(out, in)`` matrix, ℓ∞ elsewhere)
    reported as ``{o}_rel``. Returns ``{"t", "names", "matrices": {name: {stat: (T, …)}}, "median"}``."""
    ts_T = check_grid(barrier.grid() if ts_T is None else ts_T)
    names = tuple(models.family(model_cfg).checked_matrix_names(model_cfg, names))
    sets = {o: optimizers.constraint(o, weight_decay, models.family(model_cfg).hidden_matrix_names(model_cfg)) for o in constraint_optimizers}
    return spectra.along_path(kind, sharding.put(nodes_K, mesh), ts_T, _matrices_fn(model_cfg, names), constraint_sets=sets, strategy=strategy)


@functools.lru_cache(maxsize=16)
def _matrices_fn(model_cfg: LMConfig, names: tuple[str, ...]):
    """``params -> {name: W}`` of the GPT-2 family, one function object per config and names (so
    :func:`connect.spectra.along_path` compiles once per path kind)."""
    return functools.partial(models.family(model_cfg).matrices, cfg=model_cfg, names=names)


def _join(path) -> str:
    return "/".join(str(getattr(k, "key", k)) for k in path)

