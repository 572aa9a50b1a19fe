"""Training GPT-2 language models: many seeds in one program, data parallel, resumable.

One optimizer step of one seed averages the gradients of ``grad_accum`` micro-batches
(a ``lax.scan``), so a step sees ``batch_size`` sequences of ``context`` tokens::

    g = (1/A) Σ_a ∇ L(θ; x_a, y_a),   L = mean next-token cross-entropy (nats)

Several seeds are trained at once by ``vmap`` over a leading seed axis ``S`` of the params and
optimizer state; seed ``s`` has its own init (``jax.random.key(s)``) and its own data stream
(``corpus.batch(train, s, step, …)``, a pure function of ``(s, step)``). The micro-batch axis is
sharded over all local devices (a 1-D ``jax.sharding.Mesh`` named ``data``) while params and
optimizer state are replicated, so XLA inserts the gradient all-reduce. Master weights are float32;
``compute_dtype=bfloat16`` only changes the matmul operands (see :func:`connect.models.gpt2.apply`).
Across hosts the same program runs after ``jax.distributed.initialize()``: each process sees the global
``jax.devices()``, the mesh spans them all, every process builds the same batches (each device gets its rows)
and starts from process 0's state (fresh or resumed from process 0's ``OUT``, broadcast); only process 0
writes ``OUT`` (the lock, metrics, checkpoints), the others write nothing.

Run directory::

    OUT/config.json                    the TrainLMConfig (a rerun must match it) + "resolved" facts
    OUT/seed-{s}/metrics.jsonl         {"step", "loss", "lr", "aux_lr", "grad_norm", "tokens_per_s", "mfu", "val_loss"}
    OUT/seed-{s}/ckpt/step-{k:08d}/    params + optimizer state + metadata.json (connect.checkpoints)

``step`` counts completed optimizer steps; ``loss`` is the training loss of that step's batch
(before its update), ``val_loss`` the val loss after it (step 0: at init). Rerunning on the same
``OUT`` resumes from the newest checkpoint every seed has, drops metrics lines past it, and
reaches bit-identical parameters on CPU (:mod:`connect.lm.run_dir`).

Every input is checked (:func:`check`) before anything is written; then ``OUT`` has one writer
(:func:`connect.io.run_lock`). A training loss that is not finite stops the run at once with a
UserError naming the step; checkpoints are saved only of finite parameters before it, and a run that
fails before its first checkpoint leaves nothing it created.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm import tqdm

from connect import batching, checkpoints, models, optimizers, schedules, sharding
from connect.errors import UserError
from connect.lm import corpus, run_dir
from connect.lm.config import TrainLMConfig
from connect.lm.flops import flops_per_token, n_params, peak_flops
from connect.models import LMConfig


def train(cfg: TrainLMConfig, out: str, *, seeds: Sequence[int] | None = None, progress: bool = True,
          devices: Sequence | None = None) -> dict:
    """Train (or resume) every seed of ``cfg`` into run directory ``out``; see the module docstring.

    ``seeds`` overrides ``cfg.seeds``; ``devices`` (default ``jax.devices()``) form the data-parallel
    mesh. Returns a summary: per seed the last logged training loss and val loss, the val split's
    unigram entropy (the context-free baseline), throughput and MFU of the last logged interval.
    Every input is checked before anything is written (:func:`check`); ``out`` is written under its lock.
    """
    if seeds is not None:
        cfg = dataclasses.replace(cfg, seeds=[int(s) for s in seeds])
    run = check(cfg, out, devices)
    with run_dir.locked(out, cfg.seeds) if run_dir.writes() else contextlib.nullcontext():
        if run_dir.writes():
            run_dir.claim(out, cfg, run.resolved)
        run, params_S, opt_S, start = _initial_state(run, out)
        for s in cfg.seeds if run_dir.writes() else ():
            run_dir.truncate_metrics(run_dir.metrics_path(out, s), start)
        last = _loop(run, out, params_S, opt_S, start, progress)
    return run_dir.summary(out, cfg, run.data, run.n_dev, last)


class _Run(NamedTuple):
    """What :func:`check` resolved before any work: the config, model, corpus and mesh (the optimizer is
    built by :func:`_initial_state`)."""

    cfg: TrainLMConfig
    model_cfg: LMConfig
    data: corpus.Corpus
    mesh: Mesh
    micro: int
    dtype: object
    resolved: dict
    optimizer: optax.GradientTransformation | None = None

    @property
    def n_dev(self) -> int:
        return self.mesh.devices.size


def check(cfg: TrainLMConfig, out: str, devices: Sequence | None = None) -> _Run:
    """Check every input of :func:`train` — config, corpus, mesh, the run directory ``out`` — writing
    nothing; a problem is a UserError naming it and the fix. Returns what was resolved."""
    cfg.validate()
    model_cfg = cfg.model_config()
    data = corpus.load(cfg.data or None, tokenizer=cfg.tokenizer or None, val_fraction=cfg.val_fraction)
    if data.vocab_size > model_cfg.vocab_size:
        raise UserError(f"corpus {data.name} has vocabulary {data.vocab_size} > the model's vocab_size {model_cfg.vocab_size}: "
                        f"pass --model-overrides vocab_size={data.vocab_size} or a model with a larger vocabulary")
    mesh = Mesh(np.asarray(list(devices) if devices is not None else jax.devices()), ("data",))
    n_dev, micro = mesh.devices.size, cfg.batch_size // cfg.grad_accum
    if micro % n_dev:
        raise UserError(f"micro-batch batch_size/grad_accum = {micro} is not divisible by the {n_dev} devices: "
                        f"make it a multiple of {n_dev}")
    dtype = _compute_dtype(cfg.compute_dtype, mesh)
    resolved = {
        "model_config": model_cfg.to_dict(), "corpus": data.name, "corpus_vocab_size": data.vocab_size,
        "tokenizer": data.tokenizer, "train_tokens": int(data.train.size), "val_tokens": int(data.val.size),
        "compute_dtype": jnp.dtype(dtype).name, "n_devices": n_dev, "device_kind": mesh.devices.flat[0].device_kind,
        "n_params": n_params(model_cfg), "flops_per_token": flops_per_token(model_cfg, cfg.context),
    }
    for split in (data.train, data.val):
        corpus.check_windows(split, micro, cfg.context)
    run_dir.check(out, cfg)
    return _Run(cfg, model_cfg, data, mesh, micro, dtype, resolved)


_init = jax.jit(lambda key, model_cfg: models.family(model_cfg).init(key, model_cfg), static_argnums=1)


def _initial_state(run: _Run, out: str):
    """``(run, params_S, opt_S, start)``: ``run`` with its optimizer, and the state fresh from the seeds or
    resumed from the newest step every seed saved (process 0's, in a ``jax.distributed`` run)."""
    cfg = run.cfg
    params0 = _init(jax.random.key(cfg.seeds[0]), run.model_cfg)
    optimizer = make_optimizer(cfg, params0)
    start = run_dir.resume_step(out, cfg.seeds)
    if start:
        states = [checkpoints.load_train_state(checkpoints.step_dir(run_dir.ckpt_dir(out, s), start), optimizer.init(params0))
                  for s in cfg.seeds]
        params_S, opt_S = batching.stack([p for p, _, _ in states]), batching.stack([o for _, o, _ in states])
    else:
        params_S = batching.stack([_init(jax.random.key(s), run.model_cfg) for s in cfg.seeds])
        opt_S = jax.jit(jax.vmap(optimizer.init))(params_S)
    if jax.process_count() > 1:  # every process of a jax.distributed run continues from process 0's state
        start, params_S, opt_S = multihost_utils.broadcast_one_to_all((np.int32(start), params_S, opt_S))
        start = int(start)
    params_S, opt_S = sharding.put_as((params_S, opt_S), NamedSharding(run.mesh, PartitionSpec()))
    return run._replace(optimizer=optimizer), params_S, opt_S, start


def _loop(run: _Run, out: str, params_S, opt_S, start: int, progress: bool) -> dict:
    """Steps ``start … cfg.steps − 1``: log, evaluate and checkpoint on schedule; the last logged values.
    The first step whose training loss is not finite stops the run (:func:`_check_finite`) before its metrics
    are written or a later checkpoint is saved."""
    cfg, model_cfg = run.cfg, run.model_cfg
    step_fn = _step_fn(cfg, model_cfg, run.optimizer, run.dtype, NamedSharding(run.mesh, PartitionSpec()))
    batch_sharding = NamedSharding(run.mesh, PartitionSpec(None, None, "data", None))
    lrs = jax.jit(lambda k: jnp.stack([f(k) for f in _schedules(cfg)]))
    peak = peak_flops(run.mesh.devices.flat[0])
    rates = (len(cfg.seeds) * cfg.batch_size * cfg.context, None if peak is None else run.resolved["flops_per_token"] / (peak * run.n_dev))
    eval_kw = dict(batch_size=run.micro, context=cfg.context, max_batches=cfg.eval_batches or None, compute_dtype=run.dtype)
    last: dict = {}
    bad_S = jnp.full((len(cfg.seeds),), -1, jnp.int32)
    if start == 0 and cfg.eval_every:
        run_dir.write_rows(out, cfg.seeds, {"step": 0}, {"val_loss": _eval_losses(params_S, model_cfg, run.data.val, **eval_kw)})
    bar = tqdm(total=cfg.steps, initial=start, desc=f"train-lm {cfg.optimizer}", unit="step", disable=not progress)
    pending, clock = None, (time.perf_counter(), start)
    for k in range(start, cfg.steps):
        xy = sharding.put_as(_batch(run.data.train, cfg, k), batch_sharding)
        params_S, opt_S, m = step_fn(params_S, opt_S, *xy)
        done = k + 1
        bad_S = _first_bad(bad_S, m["loss"], done)
        if pending is not None:  # read step k-1's metrics while step k runs
            _check_finite(out, cfg, pending["bad"])
            clock, pending = _flush(out, cfg, pending, *clock, *rates, last, bar), None
        is_eval = done == cfg.steps or (cfg.eval_every and done % cfg.eval_every == 0)
        is_ckpt = done == cfg.steps or (cfg.checkpoint_every and done % cfg.checkpoint_every == 0)
        if done % cfg.log_every == 0 or done == cfg.steps:
            lr, aux_lr = np.asarray(lrs(k)).tolist()
            pending = {"step": done, "metrics": m, "lr": lr, "aux_lr": aux_lr, "bad": bad_S}
        if is_eval or is_ckpt:
            _check_finite(out, cfg, bad_S, params_S if is_ckpt else None, done)
            extra = {"val_loss": _eval_losses(params_S, model_cfg, run.data.val, **eval_kw)} if is_eval else {}
            last.update(extra)
            if pending is not None:
                _flush(out, cfg, pending, *clock, *rates, last, bar, extra)
                pending = None
            elif extra:
                run_dir.write_rows(out, cfg.seeds, {"step": done}, extra)
            if is_ckpt:
                _save(out, cfg, model_cfg, run.data.name, params_S, opt_S, done)
            clock = (time.perf_counter(), done)
        bar.update()
    bar.close()
    return last


def make_optimizer(cfg: TrainLMConfig, params) -> optax.GradientTransformation:
    """:func:`connect.optimizers.make_lm` with ``cfg``'s optimizer, scheduled learning rates, decay and clipping."""
    lr, aux_lr = _schedules(cfg)
    return optimizers.make_lm(cfg.optimizer, params, lr=lr, aux_lr=aux_lr, weight_decay=cfg.weight_decay,
                              betas=tuple(cfg.betas), momentum=cfg.momentum, clip_norm=cfg.clip_norm or None,
                              matrices=models.family(cfg.model_config()).MUON_MATRICES)


def make_step(model_cfg: LMConfig, optimizer: optax.GradientTransformation, compute_dtype=jnp.float32):
    """The training step of all seeds, ``(params_S, opt_state_S, x_SxAxMxT, y_SxAxMxT) -> (params_S,
    opt_state_S, {"loss": (S,), "grad_norm": (S,)})`` (pure; jit it).

    Per seed: ``g = (1/A) Σ_a ∇L(θ; x_a, y_a)`` over the ``A`` micro-batches (``lax.scan``), the
    reported loss the same mean of the micro-batch losses and ``grad_norm = ‖g‖₂`` before clipping.
    """

    def loss_fn(params, x_MxT, y_MxT):
        return models.family(model_cfg).loss(params, x_MxT, y_MxT, model_cfg, compute_dtype=compute_dtype)

    def one(params, opt_state, x_AxMxT, y_AxMxT):
        def micro(acc, xy):
            loss, grads = jax.value_and_grad(loss_fn)(params, *xy)
            return jax.tree.map(jnp.add, acc, (loss, grads)), None

        n = x_AxMxT.shape[0]
        if n == 1:  # one micro-batch: no accumulators to zero-fill and add
            loss_sum, grad_sum = jax.value_and_grad(loss_fn)(params, x_AxMxT[0], y_AxMxT[0])
        else:
            zero = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
            (loss_sum, grad_sum), _ = jax.lax.scan(micro, zero, (x_AxMxT, y_AxMxT))
        grads = jax.tree.map(lambda g: g / n, grad_sum)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, {"loss": loss_sum / n, "grad_norm": optax.tree.norm(grads)}

    def step(params_S, opt_state_S, x_SxAxMxT, y_SxAxMxT):
        if x_SxAxMxT.shape[0] > 1:
            return jax.vmap(one)(params_S, opt_state_S, x_SxAxMxT, y_SxAxMxT)
        # one seed: the same step without vmap's batch axis, which XLA:CPU's products run ~13 % slower
        out = one(*jax.tree.map(lambda a: a[0], (params_S, opt_state_S, x_SxAxMxT, y_SxAxMxT)))
        return jax.tree.map(lambda a: a[None], out)

    return step


def evaluate(params, model_cfg: LMConfig, tokens: np.ndarray, *, batch_size: int, context: int,
             max_batches: int | None = None, compute_dtype=jnp.float32) -> float:
    """Mean next-token cross-entropy (nats) of ``params`` over the consecutive windows of ``tokens``
    (:func:`connect.lm.corpus.eval_batches`), each window weighted equally."""
    models.family(model_cfg).check_context(model_cfg, context)
    params_S = jax.tree.map(lambda x: jnp.asarray(x)[None], params)
    return float(_eval_losses(params_S, model_cfg, tokens, batch_size=batch_size, context=context,
                              max_batches=max_batches, compute_dtype=compute_dtype)[0])


def load(path: str, *, allow_nonfinite: bool = False) -> tuple[dict, LMConfig]:
    """Params and config of a checkpoint of any language-model family: a Hugging Face directory, a connect LM
    checkpoint ``…/ckpt/step-k``, a ``…/ckpt`` or ``…/seed-s`` directory (its newest checkpoint), or a
    run directory with a single seed. Its recorded ``model_config`` is typed and must give the arrays' shapes;
    NaN or infinite weights are refused unless ``allow_nonfinite``."""
    from connect.lm import huggingface

    if huggingface.is_pretrained_dir(path):
        params, cfg = huggingface.load_pretrained(path)
        if not allow_nonfinite:
            checkpoints.check_finite(path, params)
        return params, cfg
    if not os.path.isdir(path):
        raise UserError(f"checkpoint {path} not found: pass a Hugging Face directory or a connect run's seed-S/ckpt/step-K")
    checkpoints.expect_family(path, models.LM_FAMILIES)
    if not checkpoints.is_complete(path):
        seed_dirs = sorted(d for d in os.listdir(path) if d.startswith("seed-") and os.path.isdir(os.path.join(path, d)))
        if len(seed_dirs) == 1:
            path = os.path.join(path, seed_dirs[0])
        elif seed_dirs:
            raise UserError(f"{path} holds {len(seed_dirs)} seeds ({', '.join(seed_dirs)}): pass one of them, e.g. {os.path.join(path, seed_dirs[0])}")
        if os.path.isdir(os.path.join(path, "ckpt")):
            path = os.path.join(path, "ckpt")
        steps = checkpoints.complete_steps(path)
        if not steps:
            raise UserError(f"{path} holds no complete checkpoint: pass a directory written by `connect train-lm` or `save_pretrained`")
        path = checkpoints.step_dir(path, steps[-1])
    params, meta = checkpoints.load_checkpoint(path, allow_nonfinite=allow_nonfinite)
    recorded = meta.get("model")
    fam = models.family(recorded if recorded in models.LM_FAMILIES else "gpt2")  # another value: model_config names it
    cfg = fam.config(checkpoints.model_config(path, meta, type(fam.CONFIGS["tiny"]), fam.FAMILY))
    checkpoints.check_shapes(path, params, jax.eval_shape(lambda: fam.init(jax.random.key(0), cfg)))
    return params, cfg


# --- plumbing -------------------------------------------------------------------------------------


def _compute_dtype(name: str, mesh: Mesh):
    if name == "auto":
        return jnp.float32 if mesh.devices.flat[0].platform == "cpu" else jnp.bfloat16
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


_STEP_FNS: dict = {}
#: The fields of TrainLMConfig that the compiled step depends on (with the model, precision and mesh).
_STEP_FIELDS = ("optimizer", "lr", "aux_lr", "weight_decay", "betas", "momentum", "schedule", "warmup_frac",
                "decay_frac", "final_frac", "clip_norm", "steps")


def _step_fn(cfg: TrainLMConfig, model_cfg, optimizer, dtype, replicated: NamedSharding):
    """The jitted :func:`make_step`, reused by later runs with the same optimizer, model, precision and
    mesh (a resumed run or the next test compiles nothing new)."""
    key = (tuple(str(getattr(cfg, f)) for f in _STEP_FIELDS), model_cfg, jnp.dtype(dtype).name,
           tuple(d.id for d in replicated.mesh.devices.flat))
    if key not in _STEP_FNS:
        _STEP_FNS[key] = jax.jit(make_step(model_cfg, optimizer, dtype), donate_argnums=(0, 1), out_shardings=replicated)
    return _STEP_FNS[key]


def _schedules(cfg: TrainLMConfig):
    """``(lr, aux_lr)`` schedules, step -> learning rate."""
    make = lambda peak: schedules.make(cfg.schedule, peak, cfg.steps, cfg.warmup_frac, cfg.decay_frac, cfg.final_frac)
    return make(cfg.lr), make(cfg.aux_lr or cfg.lr)


def _batch(tokens: np.ndarray, cfg: TrainLMConfig, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Step ``step``'s batches of every seed, ``(S, A, M, T)`` with ``A = grad_accum``, ``M·A = batch_size``."""
    shape = (cfg.grad_accum, cfg.batch_size // cfg.grad_accum, cfg.context)
    xs, ys = zip(*(corpus.batch(tokens, s, step, cfg.batch_size, cfg.context) for s in cfg.seeds))
    return np.stack([x.reshape(shape) for x in xs]), np.stack([y.reshape(shape) for y in ys])


def _eval_losses(params_S, model_cfg, tokens, *, batch_size, context, max_batches, compute_dtype) -> np.ndarray:
    """Per-seed mean val loss, shape ``(S,)``: batch means weighted by their number of windows."""
    fn = _eval_fn(model_cfg, jnp.dtype(compute_dtype).name)
    total, rows = 0.0, 0
    for x_BxT, y_BxT in corpus.eval_batches(tokens, batch_size, context, max_batches):
        total = total + np.asarray(fn(params_S, x_BxT, y_BxT), np.float64) * x_BxT.shape[0]
        rows += x_BxT.shape[0]
    return total / rows


_EVAL_FNS: dict = {}


def _eval_fn(model_cfg, dtype_name: str):
    """``(params_S, x_BxT, y_BxT) -> loss_S``, jitted once per model and precision."""
    key = (model_cfg, dtype_name)
    if key not in _EVAL_FNS:
        loss = lambda p, x, y: models.family(model_cfg).loss(p, x, y, model_cfg, compute_dtype=jnp.dtype(dtype_name))
        _EVAL_FNS[key] = jax.jit(jax.vmap(loss, in_axes=(0, None, None)))
    return _EVAL_FNS[key]


def _flush(out, cfg, pending, t_last, step_last, tokens_per_step, mfu_per_token, last, bar, extra=None):
    """Write a logged step's metrics (blocking on that step only); returns the new interval start.
    ``mfu_per_token`` is FLOPs per token over the mesh's peak FLOP/s (``None``: unknown peak)."""
    m = jax.device_get(pending["metrics"])
    now, step = time.perf_counter(), pending["step"]
    rate = tokens_per_step * (step - step_last) / max(now - t_last, 1e-9)
    mfu = None if mfu_per_token is None else rate * mfu_per_token
    row = {"step": step, "lr": pending["lr"], "aux_lr": pending["aux_lr"], "tokens_per_s": rate, "mfu": mfu}
    per_seed = {"loss": np.asarray(m["loss"]), "grad_norm": np.asarray(m["grad_norm"]), **(extra or {})}
    run_dir.write_rows(out, cfg.seeds, row, per_seed)
    last.update(loss=per_seed["loss"], tokens_per_s=rate, mfu=mfu)
    bar.set_postfix(loss=f"{float(np.mean(per_seed['loss'])):.4f}", tok_s=f"{rate:.3g}")
    return now, step


@jax.jit
def _first_bad(bad_S, loss_S, step):
    """Per seed, the first step whose training loss is not finite (−1: none so far)."""
    return jnp.where((bad_S < 0) & ~jnp.isfinite(loss_S), step, bad_S)


@jax.jit
def _finite(params_S):
    """Per seed, whether every parameter is finite, shape ``(S,)``."""
    return jnp.stack([jnp.isfinite(x.reshape(x.shape[0], -1)).all(axis=1) for x in jax.tree.leaves(params_S)]).all(axis=0)


def _check_finite(out: str, cfg: TrainLMConfig, bad_S, params_S=None, step: int = 0) -> None:
    """Raise :func:`connect.lm.run_dir.diverged` for the seed whose training loss stopped being finite first
    (``bad_S`` from :func:`_first_bad`), else for one whose ``params_S`` after ``step`` are not finite."""
    bad = np.asarray(bad_S)
    if (bad >= 0).any():
        i = int(np.argmin(np.where(bad >= 0, bad, np.iinfo(bad.dtype).max)))
        raise run_dir.diverged(out, cfg, cfg.seeds[i], int(bad[i]))
    if params_S is not None and not (finite := np.asarray(_finite(params_S))).all():
        raise run_dir.diverged(out, cfg, cfg.seeds[int(np.argmin(finite))], step, "parameters")


def _save(out, cfg, model_cfg, corpus_name, params_S, opt_S, step) -> None:
    if not run_dir.writes():
        return
    params_S, opt_S = jax.device_get((params_S, opt_S))
    for i, s in enumerate(cfg.seeds):
        meta = {"model": models.family(model_cfg).FAMILY, "model_config": model_cfg.to_dict(), "step": step, "seed": s,
                "optimizer": cfg.optimizer, "weight_decay": cfg.weight_decay, "data": corpus_name, "config": cfg.to_dict()}
        directory = run_dir.ckpt_dir(out, s)
        checkpoints.save_train_state(checkpoints.step_dir(directory, step), batching.take(params_S, i), batching.take(opt_S, i), meta)
        checkpoints.prune(directory, cfg.keep_checkpoints)
