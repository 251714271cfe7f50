"""The pure modules of the ranking UI (ranking_state.js, shuffle.js), run in Chromium."""

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCENARIOS = """async () => {
  const { RankingState } = await import('/static/labeling/ranking_state.js');
  const { seededShuffle } = await import('/static/labeling/shuffle.js');
  const run = (steps) => {
    const s = new RankingState([10, 20, 30, 40]);
    for (const [op, ...args] of steps) s[op](...args);
    return { order: s.order(), complete: s.isComplete(), tieNext: s.tieNext };
  };
  const shuffles = new Set();
  for (let task = 0; task < 200; task++) {
    shuffles.add(seededShuffle([1, 2, 3, 4], `${task}:7`).join());
  }
  return {
    keys: run([['append', 20], ['markTie'], ['append', 10], ['append', 30], ['append', 40]]),
    tieFirst: run([['markTie'], ['append', 10]]),
    undo: run([['append', 10], ['markTie'], ['append', 20], ['removeLast'], ['append', 30]]),
    undoTie: run([['append', 10], ['markTie'], ['removeLast'], ['append', 20]]),
    twice: run([['append', 10], ['append', 10]]),
    dragTie: run([['append', 30], ['moveToGroup', 10, 0], ['moveToNewGroup', 20, 0]]),
    dragOut: run([['append', 30], ['append', 10], ['moveToNewGroup', 30, 2], ['unplace', 10]]),
    dragLast: run([['append', 10], ['append', 20], ['moveToGroup', 20, 0]]),
    sameShuffle: seededShuffle([1, 2, 3], '5:9').join() === seededShuffle([1, 2, 3], '5:9').join(),
    distinctShuffles: shuffles.size,
  };
}"""


def test_ranking_state_and_shuffle(page) -> None:
    page.goto("/accounts/login/")
    result = page.evaluate(SCENARIOS)
    assert result["keys"] == {"order": [[20, 10], [30], [40]], "complete": True, "tieNext": False}
    assert result["tieFirst"]["order"] == [[10]]  # "=" before any card does nothing
    assert result["undo"]["order"] == [[10], [30]]  # Backspace took back the tied 20
    assert result["undoTie"]["order"] == [[20]]
    assert result["twice"]["order"] == [[10]]
    assert result["dragTie"]["order"] == [[20], [30, 10]]
    assert result["dragOut"]["order"] == [[30]]
    assert result["dragLast"]["order"] == [[10, 20]]  # the emptied group disappears
    assert result["sameShuffle"] is True
    assert result["distinctShuffles"] == 24  # all 4! orders occur
