"""KL controllers against a hand-unrolled reference; the KL estimators' invariants."""

import pytest
import torch

from training.ml.kl import (
    AdaptiveKLController,
    FixedKLController,
    kl_k3,
    kl_penalty,
    make_kl_controller,
)


def reference_beta(init: float, target: float, horizon: int, kls: list[float], n: int) -> float:
    beta = init
    for kl in kls:
        error = kl / target - 1.0
        error = 0.2 if error > 0.2 else -0.2 if error < -0.2 else error
        beta = beta * (1.0 + error * n / horizon)
    return beta


def test_adaptive_controller_hand_numbers() -> None:
    ctl = AdaptiveKLController(0.2, target=6.0, horizon=10_000)
    assert ctl.update(12.0, 256) == pytest.approx(0.2 * (1 + 0.2 * 256 / 10_000))  # clipped up
    before = ctl.value
    assert ctl.update(6.0, 256) == pytest.approx(before)  # on target: unchanged
    assert ctl.update(0.0, 256) == pytest.approx(before * (1 - 0.2 * 256 / 10_000))  # clipped
    before = ctl.value
    assert ctl.update(6.6, 100) == pytest.approx(before * (1 + 0.1 * 100 / 10_000))


def test_adaptive_controller_matches_reference_loop() -> None:
    kls = [0.0, 1.5, 3.0, 5.9, 6.1, 7.0, 9.0, 30.0, 4.0, 6.0]
    ctl = AdaptiveKLController(0.05, target=6.0, horizon=500)
    for kl in kls:
        ctl.update(kl, 64)
    assert ctl.value == pytest.approx(reference_beta(0.05, 6.0, 500, kls, 64), rel=1e-12)


def test_fixed_controller_and_factory() -> None:
    fixed = make_kl_controller(0.1, None, 10_000)
    assert isinstance(fixed, FixedKLController)
    assert fixed.update(100.0, 64) == 0.1
    assert isinstance(make_kl_controller(0.1, 6.0, 10_000), AdaptiveKLController)
    with pytest.raises(ValueError, match="target"):
        AdaptiveKLController(0.1, target=0.0, horizon=10)


def test_k3_is_never_negative_and_zero_when_equal() -> None:
    gen = torch.Generator().manual_seed(0)
    logp = torch.randn(64, 32, generator=gen) * 10 - 5
    ref = torch.randn(64, 32, generator=gen) * 10 - 5
    assert (kl_k3(logp, ref) >= 0).all()
    assert (kl_penalty(logp, ref) < 0).any()  # k1 per sample can be negative; k3 cannot
    assert kl_k3(logp, logp).abs().max().item() == 0.0
    tiny = torch.full((4,), -1.0)
    assert (kl_k3(tiny, tiny + 1e-7) >= 0).all()


def test_k1_and_k3_expectations_equal_exact_kl() -> None:
    # Over the whole support of pi, E_pi[k1] = E_pi[k3] = KL(pi || pi_ref) exactly.
    logp = torch.log_softmax(torch.tensor([2.0, 0.5, -1.0, 0.0], dtype=torch.float64), dim=0)
    ref = torch.log_softmax(torch.tensor([0.0, 1.0, 0.5, -2.0], dtype=torch.float64), dim=0)
    p = logp.exp()
    exact = (p * (logp - ref)).sum()
    torch.testing.assert_close((p * kl_penalty(logp, ref)).sum(), exact)
    torch.testing.assert_close((p * kl_k3(logp, ref)).sum(), exact)


def test_default_ppo_run_can_move_beta_at_least_2x() -> None:
    """The product's PPOConfig(): with the KL far above (below) target for a whole default
    run, beta at least doubles (at least halves): the controller steers at the defaults."""
    from training.ml.ppo import PPOConfig, kl_horizon

    config = PPOConfig()
    assert config.kl_target is not None
    for kl, check in ((10 * config.kl_target, lambda b: b >= 2.0), (0.0, lambda b: b <= 0.5)):
        ctl = make_kl_controller(config.init_kl_coef, config.kl_target, kl_horizon(config))
        for _ in range(config.steps):
            ctl.update(kl, config.batch_size)
        assert check(ctl.value / config.init_kl_coef), ctl.value
        expected = reference_beta(
            config.init_kl_coef,
            config.kl_target,
            kl_horizon(config),
            [kl] * config.steps,
            config.batch_size,
        )
        assert ctl.value == pytest.approx(expected, rel=1e-12)


def test_an_explicit_horizon_is_kept() -> None:
    from training.ml.ppo import PPOConfig, kl_horizon

    assert kl_horizon(PPOConfig(kl_horizon=10_000)) == 10_000
    assert kl_horizon(PPOConfig(steps=20, batch_size=8)) == 40
    assert kl_horizon(PPOConfig(steps=1, batch_size=1)) == 1
    assert kl_horizon(PPOConfig(steps=1, batch_size=6)) == 2  # rounded up, not down to 1


@pytest.mark.parametrize("batch_size", [6, 7, 9, 13])
def test_a_one_step_default_horizon_keeps_beta_positive(batch_size: int) -> None:
    """One step of >= 6 prompts: the default horizon rounds up (2, not 1), so a KL far below
    target multiplies beta by 1 - 0.2 * batch_size / horizon > 0, never a negative beta."""
    from training.ml.ppo import PPOConfig, kl_horizon

    config = PPOConfig(steps=1, batch_size=batch_size)
    assert config.kl_target is not None
    horizon = kl_horizon(config)
    assert horizon * 4 >= batch_size  # the gain of the run's one update is at most 4
    ctl = make_kl_controller(config.init_kl_coef, config.kl_target, horizon)
    beta = ctl.update(0.0, config.batch_size)
    assert beta == pytest.approx(config.init_kl_coef * (1 - 0.2 * batch_size / horizon))
    assert beta > 0


def test_the_gain_is_capped_so_beta_stays_positive() -> None:
    """A horizon shorter than a quarter of an update's episodes (set by hand): the gain is
    capped at 4, so the factor stays in [0.2, 1.8] instead of going negative."""
    ctl = AdaptiveKLController(0.2, target=6.0, horizon=1)
    assert ctl.update(0.0, 64) == pytest.approx(0.2 * (1 - 0.2 * 4))
    assert ctl.value > 0
    assert ctl.update(100.0, 64) == pytest.approx(0.2 * 0.2 * (1 + 0.2 * 4))
    for _ in range(50):
        ctl.update(0.0, 64)
    assert ctl.value > 0
