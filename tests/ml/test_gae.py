"""GAE and masked statistics against hand-computed numbers and a plain Python loop."""

import math

import pytest
import torch

from training.ml.gae import compute_gae, masked_mean, masked_var, masked_whiten


def reference_gae(
    rewards: list[list[float]],
    values: list[list[float]],
    mask: list[list[int]],
    gamma: float,
    lam: float,
) -> tuple[list[list[float]], list[list[float]]]:
    """CleanRL-style loop, one row at a time over its real tokens only."""
    advantages, returns = [], []
    for row_r, row_v, row_m in zip(rewards, values, mask, strict=True):
        index = [t for t, m in enumerate(row_m) if m]
        adv_row = [0.0] * len(row_r)
        last = 0.0
        for pos in reversed(range(len(index))):
            t = index[pos]
            next_value = row_v[index[pos + 1]] if pos + 1 < len(index) else 0.0
            delta = row_r[t] + gamma * next_value - row_v[t]
            last = delta + gamma * lam * last
            adv_row[t] = last
        advantages.append(adv_row)
        returns.append([a + v if m else 0.0 for a, v, m in zip(adv_row, row_v, row_m, strict=True)])
    return advantages, returns


def test_gae_matches_hand_computed_numbers() -> None:
    rewards = torch.tensor([[0.0, 0.0, 1.0], [2.0, 5.0, 5.0]], dtype=torch.float64)
    values = torch.tensor([[0.5, 0.4, 0.3], [1.0, 9.0, 9.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    advantages, returns = compute_gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # Row 0: A2 = 1 - 0.3 = 0.7; A1 = (0.3 - 0.4) + 0.5 * 0.7 = 0.25; A0 = -0.1 + 0.125.
    expected_adv = torch.tensor([[0.025, 0.25, 0.7], [1.0, 0.0, 0.0]], dtype=torch.float64)
    expected_ret = torch.tensor([[0.525, 0.65, 1.0], [2.0, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(advantages, expected_adv, rtol=0, atol=1e-12)
    torch.testing.assert_close(returns, expected_ret, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 0.95), (0.9, 1.0), (0.99, 0.0)])
def test_gae_matches_reference_loop_with_padding_and_gaps(gamma: float, lam: float) -> None:
    gen = torch.Generator().manual_seed(0)
    rewards = torch.randn(5, 9, generator=gen, dtype=torch.float64)
    values = torch.randn(5, 9, generator=gen, dtype=torch.float64)
    mask = (torch.rand(5, 9, generator=gen) > 0.3).long()
    mask[0] = 1  # a full row
    mask[1] = 0  # an empty row
    mask[2, 4:] = 0  # right padding
    advantages, returns = compute_gae(rewards, values, mask, gamma=gamma, lam=lam)
    ref_adv, ref_ret = reference_gae(rewards.tolist(), values.tolist(), mask.tolist(), gamma, lam)
    torch.testing.assert_close(advantages, torch.tensor(ref_adv, dtype=torch.float64))
    torch.testing.assert_close(returns, torch.tensor(ref_ret, dtype=torch.float64))


def test_gae_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        compute_gae(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, 3), 1.0, 0.95)


def test_masked_mean_and_var_ignore_padding() -> None:
    values = torch.tensor([[1.0, 2.0, 100.0], [3.0, -50.0, 4.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [1, 0, 1]])
    assert masked_mean(values, mask).item() == pytest.approx(2.5)
    torch.testing.assert_close(
        masked_mean(values, mask, dim=1), torch.tensor([1.5, 3.5], dtype=torch.float64)
    )
    # Real values 1, 2, 3, 4: mean 2.5, squared deviations sum 5.
    assert masked_var(values, mask, unbiased=False).item() == pytest.approx(5 / 4)
    assert masked_var(values, mask).item() == pytest.approx(5 / 3)


def test_masked_whiten_gives_zero_mean_unit_variance_on_real_tokens() -> None:
    values = torch.tensor([[1.0, 2.0, 100.0], [3.0, -50.0, 4.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [1, 0, 1]])
    whitened = masked_whiten(values, mask)
    scale = 1 / math.sqrt(5 / 3 + 1e-8)
    expected = torch.tensor(
        [[-1.5 * scale, -0.5 * scale, 0.0], [0.5 * scale, 0.0, 1.5 * scale]], dtype=torch.float64
    )
    torch.testing.assert_close(whitened, expected)
    kept = masked_whiten(values, mask, shift_mean=False)
    assert masked_mean(kept, mask).item() == pytest.approx(2.5)
