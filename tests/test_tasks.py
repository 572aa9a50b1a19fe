"""Tasks: deterministic generators with right answers (independent evaluators), disjoint splits, encoding,
greedy decoding against a naive token-by-token loop, exact match, answer-token loss against numpy."""

import ast
import operator

import jax
import numpy as np
import pytest

from connect.errors import UserError
from connect.lm import tasks
from connect.models import gpt2

CFG = gpt2.config("tiny", n_layer=1, n_embd=16, n_head=2, n_inner=32, n_positions=24)


def _ast_value(expr: str) -> int:
    """An independent evaluator: Python's own parse tree of the expression, walked."""
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}

    def walk(node):
        if isinstance(node, ast.BinOp):
            return ops[type(node.op)](walk(node.left), walk(node.right))
        assert isinstance(node, ast.Constant) and isinstance(node.value, int)
        return node.value

    return walk(ast.parse(expr, mode="eval").body)


def test_generators_are_deterministic_and_right():
    for name in tasks.NAMES:
        a, b = tasks.make(name, seed=3, n_train=40, n_heldout=20), tasks.make(name, seed=3, n_train=40, n_heldout=20)
        assert a == b and a != tasks.make(name, seed=4, n_train=40, n_heldout=20)
        assert len(a.train) == 40 and len(a.heldout) == 20
        assert all(ans.endswith(b"\n") for _, ans in a.train + a.heldout)
        train_prompts = {p for p, _ in a.train}
        if name == "memorize":
            assert set(a.heldout) <= set(a.train)  # recall of the taught facts
        else:
            assert train_prompts.isdisjoint(p for p, _ in a.heldout)
    arith = tasks.make("arithmetic", seed=0, n_train=300, n_heldout=50)
    n_mul = 0
    for prompt, ans in arith.train + arith.heldout:
        expr = prompt.decode()[:-1]
        n_mul += "*" in expr
        assert expr.count("+") + expr.count("-") + expr.count("*") >= 2  # multi-step
        assert int(ans.decode()) == _ast_value(expr), expr
    assert n_mul > 50  # precedence is exercised
    for prompt, ans in sum((t.train + t.heldout for t in [tasks.make("modadd", n_train=50, n_heldout=50)]), ()):
        a_, rest = prompt.decode().split("+")
        b_, m = rest[:-1].split(" mod ")
        assert int(ans) == (int(a_) + int(b_)) % int(m) and int(m) == 97
    for prompt, ans in tasks.make("reverse", n_train=30, n_heldout=10).train:
        assert ans.decode()[:-1] == "".join(reversed(prompt.decode()[4:-1]))
    assert tasks.evaluate_expression("2*3*4-5+6*0") == 19 == _ast_value("2*3*4-5+6*0")


def test_user_file_and_unknown_name(tmp_path):
    path = tmp_path / "qa.txt"
    path.write_text("".join(f"q{i}?\ta{i}\n" for i in range(10)) + "\n")
    t = tasks.make(str(path), seed=1, n_train=100, n_heldout=3)
    assert len(t.heldout) == 3 and len(t.train) == 7
    assert sorted(t.train + t.heldout) == sorted((f"q{i}?".encode(), f"a{i}\n".encode()) for i in range(10))
    (tmp_path / "bad.txt").write_text("no tab here\n")
    with pytest.raises(UserError, match="no tab"):
        tasks.make(str(tmp_path / "bad.txt"))
    with pytest.raises(UserError, match="unknown task 'sudoku'"):
        tasks.make("sudoku")


def test_encode_masks_exactly_the_answer():
    ex = tasks.make("arithmetic", n_train=20, n_heldout=1).train
    enc = tasks.encode(ex, 20)
    for i, (p, a) in enumerate(ex):
        assert bytes(enc.y_NxT[i][enc.mask_NxT[i] > 0].astype(np.uint8)) == a
        assert bytes(enc.x_NxT[i, :len(p)].astype(np.uint8)) == p
    with pytest.raises(UserError, match="context"):
        tasks.encode([(b"x" * 30, b"1\n")], 20)


def test_greedy_decoding_loss_and_exact_match_against_naive_loop():
    params = jax.jit(gpt2.init, static_argnums=1)(jax.random.key(0), CFG)
    params = jax.tree.map(lambda w: w * 8.0 if w.ndim >= 2 else w, params)  # sharper, non-uniform predictions
    ex = tasks.make("reverse", seed=2, n_train=6, n_heldout=1).train
    enc = tasks.encode(ex, CFG.n_positions)
    pred = tasks.greedy_answers(params, CFG, enc, batch_size=4)
    apply = jax.jit(gpt2.apply, static_argnums=2)
    total = count = 0.0
    for i, (p, a) in enumerate(ex):
        seq = list(p)
        for _ in range(len(a)):  # naive: the sequence grows one token at a time; its last position is read
            padded = np.asarray([seq + [0] * (CFG.n_positions - len(seq))], np.int32)  # one shape (causal: pads unseen)
            seq.append(int(np.argmax(np.asarray(apply(params, padded, CFG))[0, len(seq) - 1])))
        np.testing.assert_array_equal(pred[i, :len(a)], seq[len(p):])
        full = np.asarray([list(p + a) + [0] * (CFG.n_positions + 1 - len(p + a))], np.int32)
        logits = np.asarray(apply(params, full[:, :-1], CFG), np.float64)[0]
        logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)
        total += -sum(logp[len(p) - 1 + j, a[j]] for j in range(len(a)))
        count += len(a)
    np.testing.assert_allclose(tasks.answer_loss(params, CFG, enc, batch_size=4), total / count, rtol=1e-5)
    # answers replaced by the model's own greedy continuations: all right; one byte changed: one wrong
    own = [(p, bytes(pred[i, :len(a)].astype(np.uint8))) for i, (p, a) in enumerate(ex)]
    assert tasks.accuracy(params, CFG, tasks.encode(own, CFG.n_positions), batch_size=4) == 1.0
    own[2] = (own[2][0], bytes([(own[2][1][0] + 1) % 256]) + own[2][1][1:])
    assert tasks.accuracy(params, CFG, tasks.encode(own, CFG.n_positions), batch_size=4) == pytest.approx(5 / 6)
