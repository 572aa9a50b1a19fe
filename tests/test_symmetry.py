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


def test_index_of_a_grouped_permutation_reorders_units_within_each_group_only():
    # 2 groups of 3 units, blocks of 1: group 1's units sit at 3..5
    got = symmetry.index(np.array([[2, 0, 1], [1, 2, 0]]), block=1, fused=1)
    assert got.tolist() == [2, 0, 1, 4, 5, 3]


def test_grouped_query_heads_two_level_spec_matches_a_planted_pair_of_permutations():
    """GQA's two-level symmetry: key/value groups move k, v (blocks of H) with their R query heads (blocks of R·H of q
    and of o's rows); then query heads move within their group. Matching in order recovers both levels."""
    rng = np.random.default_rng(1)
    G, R, H, D = 3, 2, 2, 5
    spec = symmetry.spec({
        "kv_heads": {"leaves": {("k",): (-1, 1), ("v",): (-1, 1), ("q",): (-1, 1, R * H), ("o",): (-2, 1, R * H)}, "block": H},
        "q_heads": {"leaves": {("q",): (-1, 1), ("o",): (-2, 1)}, "block": H, "groups": G}})
    a = {"k": rng.normal(size=(D, G * H)), "v": rng.normal(size=(D, G * H)), "q": rng.normal(size=(D, G * R * H)),
         "o": rng.normal(size=(G * R * H, D))}
    perms = {"kv_heads": rng.permutation(G), "q_heads": np.stack([rng.permutation(R) for _ in range(G)])}
    b = symmetry.permute(a, spec, perms)
    # the same function: q head i still meets kv head i // R — check q·kᵀ and the o rows pair up per head
    def pairs(p):
        q = p["q"].reshape(D, G, R, H)
        return sorted(round(float(np.sum(q[:, g, r] * p["k"].reshape(D, G, H)[:, g]) + np.sum(p["o"].reshape(G, R, H, D)[g, r])), 9)
                      for g in range(G) for r in range(R))
    assert pairs(a) == pairs(b) and not np.array_equal(a["q"], b["q"])
    found = symmetry.match(a, b, spec)
    np.testing.assert_array_equal(symmetry.permute(b, spec, found)["q"], a["q"])
    np.testing.assert_array_equal(symmetry.permute(b, spec, found)["o"], a["o"])
    assert symmetry.features(a, spec["q_heads"]).shape == (G, R, H * D + H * D)
