"""Pairwise comparisons implied by a K-wise ranking with ties.

InstructGPT (Ouyang et al. 2022, section 3.5): a labeler ranks K responses, which yields
C(K, 2) comparisons; ties (D > C > A = B) remove the pairs inside a tie group.
"""


def pairs_from_tie_groups(tie_groups: list[list[int]]) -> list[tuple[int, int, int]]:
    """Every (chosen_id, rejected_id, margin) between two different tie groups.

    `tie_groups` lists response ids, best group first. `margin` is the distance between the
    two groups (1 for neighbours). Without ties K responses give C(K, 2) pairs; responses
    in the same group give none; a single group (all tied) gives no pairs at all.
    """
    pairs: list[tuple[int, int, int]] = []
    for better, group in enumerate(tie_groups):
        for worse in range(better + 1, len(tie_groups)):
            for chosen in group:
                for rejected in tie_groups[worse]:
                    pairs.append((chosen, rejected, worse - better))
    return pairs
