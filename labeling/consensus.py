"""One consensus ranking from several labelers' rankings of the same task.

Every input ranking is a list of tie groups of response ids, best group first (the shape
`Ranking.tie_groups` stores). Every method returns the same shape, so ties survive the merge:
responses end up in one group when the method cannot tell them apart.

- ranked pairs (Tideman 1987; OpenAssistant merges its rankings this way, in
  `backend/oasst_backend/utils/ranking.py`): lock pairwise majorities from the strongest
  down, skipping those that would close a cycle; read the ranking off the locked graph;
- Borda: points for every response placed below, half a point for every response tied;
- Bradley-Terry: maximum-likelihood strengths by Hunter's (2004) MM iterations, ties
  counted as half a win each way.

Pure functions on plain lists: no database.
"""

import math
from collections.abc import Callable, Hashable, Sequence
from fractions import Fraction

Item = Hashable  # a response id
TieGroups = list[list[Item]]
Wins = dict[tuple[Item, Item], int]

RANKED_PAIRS, BORDA, BRADLEY_TERRY = "ranked_pairs", "borda", "bradley_terry"
METHODS = (RANKED_PAIRS, BORDA, BRADLEY_TERRY)

# Bradley-Terry: a virtual tie of this weight between every two responses keeps every
# strength finite when a response won (or lost) every comparison (a weak symmetric prior).
BT_PRIOR_TIES = 0.5
BT_MAX_ITERATIONS = 10_000
BT_TOLERANCE = 1e-10  # stop when no log-strength moves more than this
BT_SAME_SCORE = 1e-6  # log-strengths closer than this are a tie in the output


def consensus_ranking(rankings: Sequence[TieGroups], method: str) -> TieGroups:
    """Merge `rankings` (tie groups, best first) with `method`, one of METHODS."""
    merge: dict[str, Callable[[Sequence[TieGroups]], TieGroups]] = {
        RANKED_PAIRS: ranked_pairs,
        BORDA: borda,
        BRADLEY_TERRY: bradley_terry,
    }
    if method not in merge:
        raise ValueError(f"unknown consensus method {method!r}; choose one of {', '.join(METHODS)}")
    if not rankings:
        return []
    return merge[method](rankings)


# --- Shared pieces -----------------------------------------------------------------------


def items_of(rankings: Sequence[TieGroups]) -> list[Item]:
    """Every response id named by any ranking, in order of first appearance."""
    return list(dict.fromkeys(item for ranking in rankings for group in ranking for item in group))


def pairwise_wins(rankings: Sequence[TieGroups]) -> Wins:
    """wins[(a, b)]: how many rankings place `a` in a strictly better group than `b`."""
    wins: Wins = {}
    for ranking in rankings:
        for better, group in enumerate(ranking):
            for worse_group in ranking[better + 1 :]:
                for a in group:
                    for b in worse_group:
                        wins[a, b] = wins.get((a, b), 0) + 1
    return wins


def groups_by_score(
    items: Sequence[Item], score: dict[Item, float], same: float = 0.0
) -> TieGroups:
    """Items sorted by score, highest first; neighbours within `same` of the group's best share
    a group. Items with equal scores keep their input order inside a group."""
    ordered = sorted(items, key=lambda item: -score[item])
    groups: TieGroups = []
    for item in ordered:
        if groups and score[groups[-1][0]] - score[item] <= same:
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


# --- Ranked pairs --------------------------------------------------------------------------


def ranked_pairs(rankings: Sequence[TieGroups]) -> TieGroups:
    """Tideman's ranked pairs with margins as the strength of a majority.

    1. For every pair with more rankings preferring `a` to `b` than the reverse, the majority
       a > b has strength wins(a, b) - wins(b, a). Pairs preferred equally give no majority.
    2. Majorities are locked from the strongest down, unless they close a cycle. Majorities of
       equal strength are taken together: those that would close a cycle with the locked graph
       or with each other are all skipped (no arbitrary tie-break by id).
    3. The output groups are the layers of the locked graph: first every response nothing
       locked beats, then the next layer, and so on. Without equal preferences this is a
       total order; a response the locked graph does not order joins the earliest layer it can.
    """
    items = items_of(rankings)
    wins = pairwise_wins(rankings)
    majorities: dict[int, list[tuple[Item, Item]]] = {}
    for a in items:
        for b in items:
            margin = wins.get((a, b), 0) - wins.get((b, a), 0)
            if margin > 0:
                majorities.setdefault(margin, []).append((a, b))
    locked: dict[Item, set[Item]] = {item: set() for item in items}
    for strength in sorted(majorities, reverse=True):
        _lock_batch(locked, majorities[strength])
    return _layers(items, locked)


def _lock_batch(locked: dict[Item, set[Item]], batch: list[tuple[Item, Item]]) -> None:
    """Add every edge a -> b of `batch` unless b reaches a through locked edges plus the batch.

    The result stays acyclic: a cycle would need an added edge a -> b with b reaching a.
    """
    trial = {item: set(beaten) for item, beaten in locked.items()}
    for a, b in batch:
        trial[a].add(b)
    for a, b in batch:
        if not _reaches(trial, b, a):
            locked[a].add(b)


def _reaches(graph: dict[Item, set[Item]], start: Item, goal: Item) -> bool:
    seen, stack = {start}, [start]
    while stack:
        node = stack.pop()
        if node == goal:
            return True
        for nxt in graph[node] - seen:
            seen.add(nxt)
            stack.append(nxt)
    return False


def _layers(items: list[Item], locked: dict[Item, set[Item]]) -> TieGroups:
    """Kahn's algorithm by layers: each group holds the responses no remaining one beats."""
    remaining = list(items)
    groups: TieGroups = []
    while remaining:
        beaten = {b for a in remaining for b in locked[a]}
        layer = [item for item in remaining if item not in beaten]
        groups.append(layer)  # never empty: the locked graph is acyclic
        remaining = [item for item in remaining if item in beaten]
    return groups


# --- Borda ---------------------------------------------------------------------------------


def borda_scores(rankings: Sequence[TieGroups]) -> dict[Item, Fraction]:
    """Per ranking, a response scores 1 for each response placed below it and 1/2 for each
    response tied with it (the averaged Borda count: K-1 for a clear winner, 0 for last)."""
    scores: dict[Item, Fraction] = {item: Fraction(0) for item in items_of(rankings)}
    for ranking in rankings:
        below = sum(len(group) for group in ranking)
        for group in ranking:
            below -= len(group)
            for item in group:
                scores[item] += below + Fraction(len(group) - 1, 2)
    return scores


def borda(rankings: Sequence[TieGroups]) -> TieGroups:
    """Responses ordered by Borda score; equal scores (exact fractions) are tied."""
    scores = borda_scores(rankings)
    return groups_by_score(items_of(rankings), {k: float(v) for k, v in scores.items()}, same=0.0)


# --- Bradley-Terry -------------------------------------------------------------------------


def bradley_terry_strengths(
    rankings: Sequence[TieGroups], prior_ties: float = BT_PRIOR_TIES
) -> dict[Item, float]:
    """Log-strengths theta of the Bradley-Terry model P(a beats b) = sigmoid(theta_a - theta_b).

    Every ranking contributes its pairs between different groups as wins, and each pair of
    tied responses as half a win each way; `prior_ties` adds that many virtual ties between
    every two responses. Hunter (2004), eq. (3): p_i <- W_i / sum_{j != i} n_ij / (p_i + p_j),
    with W_i the wins of i and n_ij the comparisons of i and j; then p is rescaled to a
    geometric mean of 1. The log-likelihood rises at every step (MM), to the unique maximum.
    """
    items = items_of(rankings)
    w: dict[tuple[Item, Item], float] = {(a, b): 0.0 for a in items for b in items if a != b}
    for (a, b), count in pairwise_wins(rankings).items():
        w[a, b] += count
    for ranking in rankings:
        for group in ranking:
            for a in group:
                for b in group:
                    if a != b:
                        w[a, b] += 0.5  # each ordered pair once: half a win each way
    for pair in w:
        w[pair] += prior_ties / 2
    return _mm_iterations(items, w)


def _mm_iterations(items: list[Item], w: dict[tuple[Item, Item], float]) -> dict[Item, float]:
    """Hunter's MM updates, all strengths at once (so symmetric responses stay exactly equal)."""
    if len(items) < 2:
        return {item: 0.0 for item in items}
    index = range(len(items))
    # n[i]: (j, n_ij) for every other response j; wins[i]: W_i.
    n = [
        [(j, w[items[i], items[j]] + w[items[j], items[i]]) for j in index if j != i] for i in index
    ]
    wins = [sum(w[items[i], items[j]] for j in index if j != i) for i in index]
    p = [1.0] * len(items)
    for _ in range(BT_MAX_ITERATIONS):
        new = [wins[i] / sum(n_ij / (p[i] + p[j]) for j, n_ij in n[i]) for i in index]
        scale = math.exp(sum(math.log(v) for v in new) / len(new))
        new = [v / scale for v in new]
        moved = max(abs(math.log(new[i] / p[i])) for i in index)
        p = new
        if moved < BT_TOLERANCE:
            break
    return {items[i]: math.log(p[i]) for i in index}


def bradley_terry(rankings: Sequence[TieGroups]) -> TieGroups:
    """Responses ordered by Bradley-Terry strength; strengths within BT_SAME_SCORE are tied."""
    strengths = bradley_terry_strengths(rankings)
    return groups_by_score(items_of(rankings), strengths, same=BT_SAME_SCORE)
