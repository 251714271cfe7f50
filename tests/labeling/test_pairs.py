"""Pairs from tie groups, checked against hand-computed cases (InstructGPT section 3.5)."""

from math import comb

import pytest

from labeling.services.pairs import pairs_from_tie_groups

A, B, C, D = 11, 12, 13, 14


def test_four_responses_without_ties_give_all_six_pairs() -> None:
    pairs = pairs_from_tie_groups([[A], [B], [C], [D]])
    assert sorted(pairs) == sorted(
        [(A, B, 1), (A, C, 2), (A, D, 3), (B, C, 1), (B, D, 2), (C, D, 1)]
    )


def test_d_above_c_above_a_tied_with_b() -> None:
    # D > C > A = B: the A-B pair is dropped, margins are group distances.
    pairs = pairs_from_tie_groups([[D], [C], [A, B]])
    assert sorted(pairs) == sorted([(D, C, 1), (D, A, 2), (D, B, 2), (C, A, 1), (C, B, 1)])


def test_all_tied_gives_no_pairs() -> None:
    assert pairs_from_tie_groups([[A, B, C, D]]) == []


def test_two_groups_of_two() -> None:
    assert sorted(pairs_from_tie_groups([[A, B], [C, D]])) == sorted(
        [(A, C, 1), (A, D, 1), (B, C, 1), (B, D, 1)]
    )


@pytest.mark.parametrize("k", range(2, 10))
def test_no_ties_gives_k_choose_2_pairs_each_once(k: int) -> None:
    pairs = pairs_from_tie_groups([[i] for i in range(k)])
    assert len(pairs) == comb(k, 2)
    assert len({(chosen, rejected) for chosen, rejected, _ in pairs}) == comb(k, 2)
    assert all(chosen < rejected for chosen, rejected, _ in pairs)  # best first
