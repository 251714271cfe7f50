"""formats.preferences: tie groups -> pairs, the implicit split, K-wise with ties, and every
refusal of the shared corpus."""

from math import comb

import pytest

from formats.errors import FormatError
from formats.preferences import (
    RankedExample,
    check_tie_groups,
    pairs_from_tie_groups,
    pairwise_rows,
    preference_from_record,
    preference_rows,
    split_implicit_prompt,
)
from tests.formats.corpus import HH, KWISE, PREFERENCES, Entry, assistant, user

A, B, C, D = 11, 12, 13, 14

# --- Tie groups -> pairs (InstructGPT section 3.5) ----------------------------------------


def test_four_responses_without_ties_give_all_six_pairs_with_group_distances() -> None:
    pairs = pairs_from_tie_groups([[A], [B], [C], [D]])
    assert pairs == [(A, B, 1), (A, C, 2), (A, D, 3), (B, C, 1), (B, D, 2), (C, D, 1)]


def test_d_above_c_above_a_tied_with_b() -> None:
    # D > C > A = B: the A-B pair is dropped, margins are group distances.
    pairs = pairs_from_tie_groups([[D], [C], [A, B]])
    assert pairs == [(D, C, 1), (D, A, 2), (D, B, 2), (C, A, 1), (C, B, 1)]


def test_all_tied_gives_no_pairs_and_two_groups_of_two_give_four() -> None:
    assert pairs_from_tie_groups([[A, B, C, D]]) == []
    assert pairs_from_tie_groups([[A, B], [C, D]]) == [(A, C, 1), (A, D, 1), (B, C, 1), (B, D, 1)]


@pytest.mark.parametrize("k", range(2, 10))
def test_no_ties_gives_k_choose_2_pairs_each_once_best_first(k: int) -> None:
    pairs = pairs_from_tie_groups([[i] for i in range(k)])
    assert len(pairs) == len({(w, lo) for w, lo, _ in pairs}) == comb(k, 2)
    assert all(winner < loser and margin == loser - winner for winner, loser, margin in pairs)


@pytest.mark.parametrize(
    ("tie_groups", "k", "reason"),
    [
        ([[0]], 1, "a ranking needs at least 2 responses, got 1"),
        ([[0], [], [1]], 2, "a tie group is empty"),
        ([[0], [0]], 2, "tie groups [[0], [0]] do not hold each of the 2 responses once"),
        ([[0], [2]], 2, "do not hold each of the 2 responses once"),
    ],
)
def test_check_tie_groups_refuses(tie_groups: list[list[int]], k: int, reason: str) -> None:
    with pytest.raises(FormatError) as refused:
        check_tie_groups(tie_groups, k)
    assert reason in refused.value.reason
    with pytest.raises(FormatError):
        RankedExample("Q", ["r"] * k, tie_groups)


def test_pairwise_rows_carry_the_margins() -> None:
    example = RankedExample("Q", ["a", "b", "c"], [[1], [0], [2]])
    assert pairwise_rows(example) == [
        {"prompt": "Q", "chosen": "b", "rejected": "a", "margin": 1.0},
        {"prompt": "Q", "chosen": "b", "rejected": "c", "margin": 2.0},
        {"prompt": "Q", "chosen": "a", "rejected": "c", "margin": 1.0},
    ]


# --- Shapes ------------------------------------------------------------------------------


def test_implicit_text_splits_after_the_last_assistant_marker_of_the_common_prefix() -> None:
    turns = "\n\nHuman: Hi\n\nAssistant: Hello" + HH
    assert split_implicit_prompt(turns + " Sure, a pun.", turns + " Sure, no.") == (
        turns,
        " Sure, a pun.",  # the shared "Sure," stays in the responses
        " Sure, no.",
    )


def test_implicit_text_without_marker_uses_the_prefix_less_trailing_spaces() -> None:
    assert split_implicit_prompt("The sky is blue.", "The sky is green.") == (
        "The sky is",
        " blue.",
        " green.",
    )


def test_implicit_chat_splits_after_the_common_messages() -> None:
    turns = [user("Hi"), assistant("Hello"), user("Joke?")]
    prompt, chosen, rejected = split_implicit_prompt(
        [*turns, assistant("A pun.")], [*turns, assistant("No.")]
    )
    assert (prompt, chosen, rejected) == (turns, "A pun.", "No.")


def test_explicit_conversational_responses_are_their_assistant_text() -> None:
    example = preference_from_record(
        {"prompt": [user("Hi?")], "chosen": [assistant("Hey")], "rejected": "No."}
    )
    assert example == RankedExample([user("Hi?")], ["Hey", "No."], [[0], [1]])


def test_kwise_with_ties_and_metadata() -> None:
    example = preference_from_record({**KWISE, "labeler": 12, "prompt_id": 4})
    assert example.responses == ["Red", "Blue", "7"]
    assert example.tie_groups == [[2], [0, 1]]
    assert (example.labeler, example.prompt_id, example.all_unacceptable) == ("12", "4", False)
    assert example.pairs == [(2, 0, 1), (2, 1, 1)]
    assert preference_from_record({**KWISE, "all_unacceptable": True}).all_unacceptable


# --- The corpus --------------------------------------------------------------------------


@pytest.mark.parametrize("entry", PREFERENCES, ids=lambda e: e.name)
def test_corpus_entry_is_taken_or_refused_on_its_line(entry: Entry) -> None:
    data = b'{"prompt": "P", "chosen": "a", "rejected": "b"}\n\n' + entry.raw + b"\n"
    if entry.refusal is None:
        assert [line for line, _ in preference_rows(data, "p.jsonl")] == [1, 3]
        return
    with pytest.raises(FormatError) as refused:
        preference_rows(data, "p.jsonl")
    assert refused.value.line == 3
    assert entry.refusal in refused.value.reason


def test_an_empty_file_holds_no_preference_records() -> None:
    with pytest.raises(FormatError, match=r"^the file holds no preference records$"):
        preference_rows(b"\n", "p.jsonl")
