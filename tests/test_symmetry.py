"""connect.symmetry: a family's permutations as data — index arithmetic, inverses, and weight matching."""

import numpy as np

from connect import symmetry


def test_index_moves_whole_blocks_in_every_fused_copy():
    # 2 fused copies of 3 units with blocks of 2 entries: axis of 12 entries
    got = symmetry.index(np.array([2, 0, 1]), block=2, fused=2)
    assert got.tolist() == [4, 5, 0, 1, 2, 3, 10, 11, 6, 7, 8, 9]


def test_permute_then_inverse_is_identity_and_matching_recovers_a_planted_permutation():
    rng = np.random.default_rng(0)
    L, N, B = 2, 4, 3
    spec = symmetry.spec({"heads": {"leaves": {("qkv",): (-1, 3), ("out",): (-2, 1), ("missing",): (0, 1)},
                                    "block": B, "stacked": True}})
    a = {"qkv": rng.normal(size=(L, 5, 3 * N * B)), "out": rng.normal(size=(L, N * B, 5))}
    perms = {"heads": np.stack([rng.permutation(N) for _ in range(L)])}
    b = symmetry.permute(a, spec, perms)
    inverse = {"heads": np.argsort(perms["heads"], axis=1)}
    back = symmetry.permute(b, spec, inverse)
    assert all(np.array_equal(back[k], a[k]) for k in a) and not np.array_equal(b["qkv"], a["qkv"])
    found = symmetry.match(a, b, spec)["heads"]  # B's slot j holds A's unit perm[j]: matching A needs the inverse
    np.testing.assert_array_equal(found, inverse["heads"])
    # the feature rows hold exactly what a head's permutation moves: 3 copies × B columns × 5 rows, plus B rows × 5
    assert symmetry.features(a, spec["heads"], layer=0).shape == (N, 3 * B * 5 + B * 5)
