"""Finetuning tasks as byte text (vocabulary 256, the tiny GPT-2's), generated offline from a seed.

Each example is a *prompt* and an *answer* that ends in ``"\\n"``; the model reads ``prompt + answer``
and is trained and scored on the answer's bytes only. Tasks (:data:`NAMES`):

* ``arithmetic`` — multi-step integer expressions with ``+ - *`` and the usual precedence,
  ``"12+7*3="`` → ``"33\\n"``; held-out expressions never occur in train (a reasoning-style task);
* ``modadd`` — modular addition ``"a+b mod 97="`` → ``"(a+b) mod 97\\n"`` with the operand pairs
  split into disjoint train and held-out sets (Power et al. 2022's grokking task: the rule must be
  inferred, memorising train pairs does not answer held-out ones);
* ``reverse`` — ``"rev abcde="`` → ``"edcba\\n"`` on unseen strings (a pattern task);
* ``memorize`` — random key→value facts ``"qzkxa:"`` → ``"384\\n"``; there is nothing to infer, so the
  held-out split is the first ``n_heldout`` train facts (recall is the measure);
* a user text file — one example per line, ``prompt<TAB>answer`` (a ``"\\n"`` is appended to the
  answer); lines are shuffled by the seed and split into train and held-out.

Scores: the mean cross-entropy of the answer tokens (:func:`answer_loss`) and the exact-match
accuracy of greedy decoding (:func:`accuracy`): the answer counts as right when the ``len(answer)``
greedy tokens after the prompt equal it, the final ``"\\n"`` included (so the model must also stop).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import string

import jax
import jax.numpy as jnp
import numpy as np

from connect import models
from connect.errors import UserError
from connect.models import LMConfig

NAMES = ("arithmetic", "modadd", "reverse", "memorize")
#: The modulus of ``modadd``.
MODULUS = 97
#: Token id of padding (never a target: the loss mask is 0 there).
PAD = 0


@dataclasses.dataclass(frozen=True)
class Task:
    """A task's examples: ``(prompt, answer)`` byte strings, train and held-out."""

    name: str
    train: tuple[tuple[bytes, bytes], ...]
    heldout: tuple[tuple[bytes, bytes], ...]


@dataclasses.dataclass(frozen=True)
class Encoded:
    """Examples as fixed-length arrays: ``x = seq[:-1]``, ``y = seq[1:]`` of ``seq = prompt + answer``
    (padded with :data:`PAD`), ``mask`` 1 where ``y`` is an answer token."""

    x_NxT: np.ndarray
    y_NxT: np.ndarray
    mask_NxT: np.ndarray
    prompt_len_N: np.ndarray
    answer_len_N: np.ndarray


def make(name: str, *, seed: int = 0, n_train: int = 512, n_heldout: int = 128) -> Task:
    """Task ``name`` (one of :data:`NAMES`, or a path to a ``prompt<TAB>answer`` text file) with
    ``n_train`` train and ``n_heldout`` held-out examples, a pure function of ``seed``."""
    if n_train < 1 or n_heldout < 1:
        raise UserError(f"a task needs n_train ≥ 1 and n_heldout ≥ 1, got {n_train} and {n_heldout}")
    rng = np.random.default_rng([seed, NAMES.index(name) if name in NAMES else len(NAMES)])
    if name == "memorize":
        facts = _unique(rng, n_train, lambda r: _word(r, 5) + ":", lambda r, _: str(int(r.integers(100, 1000))))
        return Task(name, facts, facts[:n_heldout])
    if name == "modadd":
        n = n_train + n_heldout
        if n > MODULUS**2:
            raise UserError(f"modadd has {MODULUS**2} operand pairs, asked for {n}: lower n_train + n_heldout")
        pairs = rng.permutation(MODULUS**2)[:n]
        ex = tuple((f"{p // MODULUS}+{p % MODULUS} mod {MODULUS}=".encode(), f"{(p // MODULUS + p % MODULUS) % MODULUS}\n".encode())
                   for p in pairs)
        return Task(name, ex[:n_train], ex[n_train:])
    if name == "arithmetic":
        ex = _unique(rng, n_train + n_heldout, lambda r: _expression(r) + "=", lambda _, p: str(evaluate_expression(p[:-1])))
        return Task(name, ex[:n_train], ex[n_train:])
    if name == "reverse":
        ex = _unique(rng, n_train + n_heldout, lambda r: "rev " + _word(r, int(r.integers(3, 9))) + "=", lambda _, p: p[4:-1][::-1])
        return Task(name, ex[:n_train], ex[n_train:])
    if os.path.isfile(name):
        return _from_file(name, rng, n_train, n_heldout)
    raise UserError(f"unknown task {name!r}: use one of {', '.join(NAMES)} or a text file of prompt<TAB>answer lines")


def evaluate_expression(expr: str) -> int:
    """The value of ``a₀ o₁ a₁ … oₖ aₖ`` (non-negative integers, ``o ∈ {+, -, *}``): products first,
    then the sums and differences from left to right."""
    terms, signs, current = [], [1], None
    number, op_before = "", "+"
    for ch in expr + "+":
        if ch.isdigit():
            number += ch
            continue
        value = int(number)
        number = ""
        current = value if op_before in "+-" else current * value
        if ch in "+-":
            terms.append(current)
            signs.append(1 if ch == "+" else -1)
        op_before = ch
    return sum(s * t for s, t in zip(signs, terms))


def encode(examples, context: int) -> Encoded:
    """Examples as :class:`Encoded` arrays of ``context`` columns (``len(prompt + answer) ≤ context + 1``)."""
    n = len(examples)
    seq_NxT1 = np.full((n, context + 1), PAD, np.int32)
    mask_NxT = np.zeros((n, context), np.float32)
    p_N, a_N = np.zeros(n, np.int32), np.zeros(n, np.int32)
    for i, (prompt, answer) in enumerate(examples):
        p, a = len(prompt), len(answer)
        if p < 1 or a < 1 or p + a > context + 1:
            raise UserError(f"example {prompt + answer!r} has {p + a} bytes, more than context + 1 = {context + 1} "
                            "(or an empty prompt or answer): use a longer context or shorter examples")
        seq_NxT1[i, :p + a] = np.frombuffer(prompt + answer, np.uint8)
        mask_NxT[i, p - 1:p - 1 + a] = 1.0
        p_N[i], a_N[i] = p, a
    return Encoded(seq_NxT1[:, :-1], seq_NxT1[:, 1:], mask_NxT, p_N, a_N)


def masked_loss(params, x_BxT, y_BxT, mask_BxT, cfg: LMConfig, *, compute_dtype=jnp.float32) -> jax.Array:
    """Mean cross-entropy over answer tokens, ``Σ m_bi (logsumexp z_bi − z_{bi,y_bi}) / Σ m_bi`` (nats)."""
    ce_BxT = models.token_nll(params, x_BxT, y_BxT, cfg, compute_dtype)
    return jnp.sum(ce_BxT * mask_BxT) / jnp.maximum(jnp.sum(mask_BxT), 1.0)


def answer_loss(params, cfg: LMConfig, enc: Encoded, batch_size: int = 128) -> float:
    """Mean cross-entropy (nats) over every answer token of ``enc`` (each token weighted equally)."""
    total = count = 0.0
    for lo in range(0, len(enc.x_NxT), batch_size):
        x_BxT, y_BxT, m_BxT = (_padded(a[lo:lo + batch_size], batch_size) for a in (enc.x_NxT, enc.y_NxT, enc.mask_NxT))
        s, c = _ce_sums(params, x_BxT, y_BxT, m_BxT, cfg)
        total, count = total + float(s), count + float(c)
    return total / max(count, 1.0)


def greedy_answers(params, cfg: LMConfig, enc: Encoded, batch_size: int = 128) -> np.ndarray:
    """Greedy continuations of the prompts, ``(N, max answer length)`` token ids: step ``j`` writes
    ``argmax z_{p+j−1}`` at position ``p + j`` (jitted, one full forward per step; causality makes the
    later, overwritten positions irrelevant)."""
    n_new = int(enc.answer_len_N.max())
    out = [np.asarray(_greedy(params, _padded(enc.x_NxT[lo:lo + batch_size], batch_size),
                              _padded(enc.prompt_len_N[lo:lo + batch_size], batch_size, 1), cfg, n_new))
           for lo in range(0, len(enc.x_NxT), batch_size)]
    return np.concatenate(out)[:len(enc.x_NxT)]


def accuracy(params, cfg: LMConfig, enc: Encoded, batch_size: int = 128) -> float:
    """Fraction of examples whose greedy answer equals the answer exactly (its ``"\\n"`` included)."""
    pred_NxA = greedy_answers(params, cfg, enc, batch_size)
    want_NxA = _answers(enc, pred_NxA.shape[1])
    valid_NxA = np.arange(pred_NxA.shape[1])[None, :] < enc.answer_len_N[:, None]
    return float(np.mean(np.all((pred_NxA == want_NxA) | ~valid_NxA, axis=1)))


def _padded(a: np.ndarray, rows: int, fill=PAD) -> np.ndarray:
    """``a`` with rows of ``fill`` appended up to ``rows`` (every batch one shape: one compilation)."""
    if len(a) == rows:
        return a
    return np.concatenate([a, np.full((rows - len(a), *a.shape[1:]), fill, a.dtype)])


def _answers(enc: Encoded, width: int) -> np.ndarray:
    """The answers' tokens, left-aligned, ``(N, width)`` (read from ``y`` at the masked positions)."""
    idx_NxA = np.minimum(enc.prompt_len_N[:, None] - 1 + np.arange(width)[None, :], enc.y_NxT.shape[1] - 1)
    return np.take_along_axis(enc.y_NxT, idx_NxA, axis=1)


@functools.partial(jax.jit, static_argnums=(4,))
def _ce_sums(params, x_BxT, y_BxT, mask_BxT, cfg):
    ce_BxT = models.token_nll(params, x_BxT, y_BxT, cfg)
    return jnp.sum(ce_BxT * mask_BxT), jnp.sum(mask_BxT)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _greedy(params, x_BxT, prompt_len_B, cfg, n_new: int):
    B, T = x_BxT.shape
    pos_T = jnp.arange(T)
    buf_BxT = jnp.where(pos_T[None, :] < prompt_len_B[:, None], x_BxT, PAD)  # the answers are not shown

    def step(j, carry):
        buf_BxT, out_BxA = carry
        logits_BxTxV = models.family(cfg).apply(params, buf_BxT, cfg)
        read_B = jnp.clip(prompt_len_B - 1 + j, 0, T - 1)
        tok_B = jnp.argmax(jnp.take_along_axis(logits_BxTxV, read_B[:, None, None], axis=1)[:, 0, :], axis=-1).astype(jnp.int32)
        buf_BxT = jnp.where(pos_T[None, :] == (prompt_len_B + j)[:, None], tok_B[:, None], buf_BxT)
        return buf_BxT, out_BxA.at[:, j].set(tok_B)

    _, out_BxA = jax.lax.fori_loop(0, n_new, step, (buf_BxT, jnp.zeros((B, n_new), jnp.int32)))
    return out_BxA


def _word(rng: np.random.Generator, length: int) -> str:
    return "".join(rng.choice(list(string.ascii_lowercase), size=length))


def _expression(rng: np.random.Generator) -> str:
    n_ops = int(rng.integers(2, 4))
    parts = [str(int(rng.integers(0, 20)))]
    for _ in range(n_ops):
        parts += [str(rng.choice(["+", "-", "*"])), str(int(rng.integers(0, 20)))]
    return "".join(parts)


def _unique(rng: np.random.Generator, n: int, prompt_of, answer_of) -> tuple[tuple[bytes, bytes], ...]:
    """``n`` examples with distinct prompts ``prompt_of(rng)`` and answers ``answer_of(rng, prompt)``."""
    seen: dict[str, str] = {}
    for _ in range(100 * n):
        if len(seen) == n:
            break
        prompt = prompt_of(rng)
        if prompt not in seen:
            seen[prompt] = answer_of(rng, prompt)
    if len(seen) < n:
        raise UserError(f"could not generate {n} distinct examples: ask for fewer")
    return tuple((p.encode(), (a + "\n").encode()) for p, a in seen.items())


def _from_file(path: str, rng: np.random.Generator, n_train: int, n_heldout: int) -> Task:
    """A user's task file: one ``prompt<TAB>answer`` example per line (blank lines skipped), any bytes."""
    try:
        with open(path, "rb") as f:
            lines = [ln.rstrip(b"\r\n") for ln in f.read().split(b"\n")]
    except OSError as e:
        raise UserError(f"task file {path} is not readable ({e.strerror or type(e).__name__}): check the file and its permissions") from None
    examples = []
    for i, ln in enumerate(lines):
        if not ln.strip():
            continue
        if b"\t" not in ln:
            raise UserError(f"{path} line {i + 1} has no tab: write one example per line as prompt<TAB>answer")
        prompt, answer = ln.split(b"\t", 1)
        if not prompt:
            raise UserError(f"{path} line {i + 1} has an empty prompt: write one example per line as prompt<TAB>answer")
        examples.append((prompt, answer + b"\n"))
    if len(examples) < 2:
        raise UserError(f"{path} holds {len(examples)} example(s): a task file needs at least 2 prompt<TAB>answer lines")
    examples = [examples[i] for i in rng.permutation(len(examples))]
    n_held = min(n_heldout, len(examples) // 2)
    return Task(os.path.basename(path), tuple(examples[n_held:n_held + n_train]), tuple(examples[:n_held]))
