"""EXP3, EXP3-IX, Hedge and the arm feedback against hand-computed values."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from o3srl import bandits
from o3srl.bandits import BanditState


def _state(log_w):
    log_w = jnp.asarray(log_w, jnp.float32)
    return BanditState(log_weights=log_w, rounds=jnp.zeros((), jnp.int32), hint=jnp.zeros_like(log_w))


def test_arm_grid():
    assert bandits.arm_grid(5, 5.0) == [0.0, 1.25, 2.5, 3.75, 5.0]
    assert bandits.arm_grid(2, 10.0) == [0.0, 10.0]
    assert bandits.arm_grid(1, 3.0) == [3.0]
    with pytest.raises(ValueError):
        bandits.arm_grid(0, 1.0)


def test_default_rates():
    assert bandits.default_learning_rate(5, 10_000) == pytest.approx(math.sqrt(2 * math.log(5) / 50_000))
    assert bandits.default_exploration(5, 10_000) == pytest.approx(math.sqrt(5 * math.log(5) / ((math.e - 1) * 10_000)))
    assert bandits.default_exploration(5, 1) == 1.0


def test_exp3_probabilities_hand_values():
    # weights ∝ (1, e): softmax = (1/(1+e), e/(1+e)); mix γ = 0.2 over K = 2: p = 0.8 softmax + 0.1
    p = bandits.arm_probabilities(_state([0.0, 1.0]), "exp3", 0.2)
    s = 1 / (1 + math.e)
    np.testing.assert_allclose(p, [0.8 * s + 0.1, 0.8 * (1 - s) + 0.1], rtol=1e-6)
    p_ix = bandits.arm_probabilities(_state([0.0, 1.0]), "exp3ix", 0.2)
    np.testing.assert_allclose(p_ix, [s, 1 - s], rtol=1e-6)


def test_exp3_importance_weighted_update_hand_values():
    probs = jnp.array([0.25, 0.75])
    losses = jnp.array([0.5, 0.9])
    # EXP3 pulls arm 0: w_0 −= η ℓ_0 / p_0 = 0.1 · 0.5 / 0.25 = 0.2 ; arm 1 untouched; then shift by the max.
    new = bandits.update_bandit(_state([0.0, 0.0]), "exp3", jnp.array(0), losses, probs, 0.1, 0.2)
    np.testing.assert_allclose(new.log_weights, [-0.2, 0.0], rtol=1e-6)
    assert int(new.rounds) == 1
    # EXP3-IX: denominator p_0 + γ_ix = 0.25 + 0.25: 0.1 · 0.5 / 0.5 = 0.1
    new = bandits.update_bandit(_state([0.0, 0.0]), "exp3ix", jnp.array(0), losses, probs, 0.1, 0.25)
    np.testing.assert_allclose(new.log_weights, [-0.1, 0.0], rtol=1e-6)
    # Hedge: every arm, w −= η ℓ = (−0.05, −0.09), shifted by the max (−0.05): (0, −0.04)
    new = bandits.update_bandit(_state([0.0, 0.0]), "hedge", jnp.array(0), losses, probs, 0.1, 0.0)
    np.testing.assert_allclose(new.log_weights, [0.0, -0.04], rtol=1e-5, atol=1e-7)


def test_lagrangian_feedback_hand_values():
    lambdas = jnp.array([0.0, 2.5, 5.0])
    # violation: Ĉ = 6, B = 4, scale max(4, 1) = 4 → g = 0.5 ; ℓ = ½ (1 − (λ/5) 0.5) = (0.5, 0.375, 0.25)
    np.testing.assert_allclose(bandits.lagrangian_feedback(lambdas, 5.0, jnp.array(6.0), 4.0), [0.5, 0.375, 0.25])
    # slack: Ĉ = 0 → g = −1 ; ℓ = ½ (1 + λ/5) = (0.5, 0.75, 1.0): λ = 0 is best
    np.testing.assert_allclose(bandits.lagrangian_feedback(lambdas, 5.0, jnp.array(0.0), 4.0), [0.5, 0.75, 1.0])
    # big violation clips at g = 1: ℓ = (0.5, 0.25, 0)
    np.testing.assert_allclose(bandits.lagrangian_feedback(lambdas, 5.0, jnp.array(100.0), 4.0), [0.5, 0.25, 0.0])
    # κ ≈ 0: the scale floor (min_scale = 1) keeps g finite: Ĉ = 0.5, B = 0 → g = 0.5
    np.testing.assert_allclose(bandits.lagrangian_feedback(lambdas, 5.0, jnp.array(0.5), 0.0), [0.5, 0.375, 0.25])


def test_ogd_lambda_step_hand_values():
    # λ + η (V̂_c − B): 1 + 0.5 (6 − 4) = 2 ; slack: 1 + 0.5 (0 − 4) = −1 → projected to 0 ; overshoot: 4 + 0.5·4 → C = 5
    assert float(bandits.ogd_lambda_step(jnp.array(1.0), jnp.array(6.0), 4.0, 0.5, 5.0)) == pytest.approx(2.0)
    assert float(bandits.ogd_lambda_step(jnp.array(1.0), jnp.array(0.0), 4.0, 0.5, 5.0)) == 0.0
    assert float(bandits.ogd_lambda_step(jnp.array(4.0), jnp.array(8.0), 4.0, 0.5, 5.0)) == 5.0


def test_shaped_feedback_hand_values():
    lambdas = jnp.array([0.0, 1.0])
    # L = R̂ − λ (Ĉ − B) = 2 − λ (3 − 1) = (2, 0); ℓ = ½ (1 + L / 4) = (0.75, 0.5)
    np.testing.assert_allclose(bandits.shaped_feedback(lambdas, jnp.array(2.0), jnp.array(3.0), 1.0, 4.0), [0.75, 0.5])
    # clipped into [0, 1]
    out = bandits.shaped_feedback(lambdas, jnp.array(100.0), jnp.array(0.0), 0.0, 1.0)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


@pytest.mark.parametrize("kind", ["exp3", "exp3ix", "hedge"])
def test_bandit_concentrates_on_best_arm_stochastic(kind):
    """Bernoulli losses with means (0.7, 0.5, 0.2, 0.6): the bandit must put most mass on arm 2."""
    means = jnp.array([0.7, 0.5, 0.2, 0.6])
    rounds = 3000
    eta = bandits.default_learning_rate(4, rounds) * 3
    gamma = 0.05

    def step(carry, key):
        state = carry
        k_arm, k_loss = jax.random.split(key)
        probs = bandits.arm_probabilities(state, kind, gamma)
        arm = bandits.draw_arm(k_arm, probs)
        losses = jax.random.bernoulli(k_loss, means).astype(jnp.float32)
        return bandits.update_bandit(state, kind, arm, losses, probs, eta, gamma), None

    state, _ = jax.lax.scan(step, bandits.init_bandit(4), jax.random.split(jax.random.PRNGKey(0), rounds))
    p = bandits.arm_probabilities(state, kind, gamma)
    assert int(jnp.argmax(p)) == 2
    assert float(p[2]) > 0.6


def test_exp3_no_regret_against_a_switching_adversary():
    """Arm 0 is better for the first third, arm 1 for the rest (so arm 1 is best in hindsight).

    EXP3 is no-regret against the best fixed arm (not a tracking algorithm): its expected loss must stay within the
    textbook bound sqrt(2 n K ln K) of arm 1's, and it must end on arm 1.
    """
    rounds, k = 3000, 2
    eta = bandits.default_learning_rate(k, rounds)
    switch = rounds // 3

    def step(state, inp):
        key, t = inp
        probs = bandits.arm_probabilities(state, "exp3", 0.0)
        arm = bandits.draw_arm(key, probs)
        losses = jnp.where(t < switch, jnp.array([0.1, 0.9]), jnp.array([0.9, 0.1]))
        return bandits.update_bandit(state, "exp3", arm, losses, probs, eta, 0.0), (probs, losses)

    keys = jax.random.split(jax.random.PRNGKey(1), rounds)
    _, (probs, losses) = jax.lax.scan(step, bandits.init_bandit(k), (keys, jnp.arange(rounds)))
    expected_loss = float((probs * losses).sum())
    best_fixed = float(losses.sum(axis=0).min())
    assert expected_loss - best_fixed <= math.sqrt(2 * rounds * k * math.log(k))
    assert float(probs[-100:, 1].mean()) > 0.8


def test_exp3s_update_mixes_the_share_hand_values():
    probs = jnp.array([0.25, 0.75])
    losses = jnp.array([0.5, 0.9])
    # pulled arm 0: w_0 −= 0.1 · 0.5 / 0.25 = 0.2 → softmax (e^−0.2, 1) / (1 + e^−0.2); share α = 0.2 over K = 2:
    # p = 0.8 softmax + 0.1; log-weights shifted by the max.
    new = bandits.update_bandit(_state([0.0, 0.0]), "exp3s", jnp.array(0), losses, probs, 0.1, 0.2)
    s0 = math.exp(-0.2) / (1 + math.exp(-0.2))
    p = [0.8 * s0 + 0.1, 0.8 * (1 - s0) + 0.1]
    np.testing.assert_allclose(new.log_weights, [math.log(p[0] / p[1]), 0.0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.nn.softmax(new.log_weights), p, rtol=1e-5)
    # the share keeps every arm at ≥ α / K however large the loss: (1 − α) · 0 + α / K = 0.1
    far = bandits.update_bandit(
        _state([0.0, 0.0]), "exp3s", jnp.array(0), jnp.array([1.0, 0.0]), jnp.array([1e-3, 1.0]), 10.0, 0.2
    )
    assert float(jax.nn.softmax(far.log_weights)[0]) == pytest.approx(0.1, rel=1e-4)


def test_optimistic_estimate_and_draw_hand_values():
    state = BanditState(log_weights=jnp.zeros(2), rounds=jnp.zeros((), jnp.int32), hint=jnp.array([0.4, 0.8]))
    # draw: softmax(w − β m) with β = 2: softmax(−0.8, −1.6); EXP3.S mixes γ = 0.1: 0.9 p + 0.05
    p = bandits.arm_probabilities(state, "exp3s", 0.1, 2.0)
    s0 = 1 / (1 + math.exp(-0.8))
    np.testing.assert_allclose(p, [0.9 * s0 + 0.05, 0.9 * (1 - s0) + 0.05], rtol=1e-6)
    # estimate m + e_k (ℓ_k − m_k) / p_k with arm 1 pulled at p = 0.75: (0.4, 0.8 + 0.1 / 0.75); η = 0.1 (EXP3, no
    # share): w = −0.1 · (0.4, 0.93333) → shifted by the max: (0, −0.053333); the next hint is this round's losses.
    new = bandits.update_bandit(
        state, "exp3", jnp.array(1), jnp.array([0.5, 0.9]), jnp.array([0.25, 0.75]), 0.1, 0.0, optimism=2.0
    )
    np.testing.assert_allclose(new.log_weights, [0.0, -0.1 * (0.8 + 0.1 / 0.75 - 0.4)], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(new.hint, [0.5, 0.9])
    # without optimism the hint stays zero, so EXP3 is exactly the plain importance-weighted algorithm
    plain = bandits.update_bandit(
        _state([0.0, 0.0]), "exp3", jnp.array(1), jnp.array([0.5, 0.9]), jnp.array([0.25, 0.75]), 0.1, 0.0
    )
    np.testing.assert_allclose(plain.hint, [0.0, 0.0])


def test_the_hint_as_an_exponential_average_of_the_losses_hand_values():
    losses, probs = jnp.array([0.5, 0.9]), jnp.array([0.25, 0.75])
    # first update: the average starts at this round's losses, whatever the stored hint
    first = BanditState(log_weights=jnp.zeros(2), rounds=jnp.zeros((), jnp.int32), hint=jnp.zeros(2))
    new = bandits.update_bandit(first, "exp3box", jnp.array(0), losses, probs, 0.1, 0.0, optimism=2.0, hint_decay=0.9)
    np.testing.assert_allclose(new.hint, [0.5, 0.9], rtol=1e-6)
    # later: m ← 0.9 m + 0.1 ℓ = 0.9 (0.4, 0.8) + 0.1 (0.5, 0.9) = (0.41, 0.81); the estimate uses the old hint
    later = BanditState(log_weights=jnp.zeros(2), rounds=jnp.ones((), jnp.int32), hint=jnp.array([0.4, 0.8]))
    new = bandits.update_bandit(later, "exp3box", jnp.array(1), losses, probs, 0.1, 0.0, optimism=2.0, hint_decay=0.9)
    np.testing.assert_allclose(new.hint, [0.41, 0.81], rtol=1e-6)
    np.testing.assert_allclose(new.log_weights, [0.0, -0.1 * (0.8 + 0.1 / 0.75 - 0.4)], rtol=1e-5, atol=1e-7)
    # ρ = 0 is the last round's losses, as before
    same = bandits.update_bandit(later, "exp3box", jnp.array(1), losses, probs, 0.1, 0.0, optimism=2.0)
    np.testing.assert_array_equal(same.hint, losses)


def test_optimistic_estimate_is_unbiased():
    """E_k~p[m + e_k (ℓ_k − m_k) / p_k] = ℓ for any hint m: the log-weight change averaged over the draw is −η ℓ."""
    hint = jnp.array([0.3, 0.9, 0.1])
    losses = jnp.array([0.6, 0.2, 0.4])
    probs = jnp.array([0.2, 0.5, 0.3])
    state = BanditState(log_weights=jnp.zeros(3), rounds=jnp.zeros((), jnp.int32), hint=hint)
    mean_change = jnp.zeros(3)
    for k in range(3):
        pulled = jax.nn.one_hot(k, 3)
        estimate = hint + pulled * (losses[k] - hint[k]) / probs[k]  # the formula, checked against the update below
        new = bandits.update_bandit(state, "exp3", jnp.array(k), losses, probs, 1.0, 0.0, optimism=1.0)
        np.testing.assert_allclose(new.log_weights - new.log_weights[0], -(estimate - estimate[0]), rtol=1e-5)
        mean_change = mean_change + probs[k] * estimate
    np.testing.assert_allclose(mean_change, losses, rtol=1e-6)


def test_lagrangian_feedback_margin_hand_values():
    lambdas = jnp.array([0.0, 2.5, 5.0])
    # Ĉ = B = 4 is on the budget, but the game is played against (1 − 0.25) · 4 = 3: g = (4 − 3) / 4 = 0.25,
    # ℓ = ½ (1 − (λ / 5) 0.25) = (0.5, 0.4375, 0.375): a policy on the boundary still pushes λ up
    out = bandits.lagrangian_feedback(lambdas, 5.0, jnp.array(4.0), 4.0, margin=0.25)
    np.testing.assert_allclose(out, [0.5, 0.4375, 0.375])


def test_lagrangian_feedback_counts_a_violation_up_to_max_violation_hand_values():
    lambdas = jnp.array([0.0, 2.5, 5.0])
    # Ĉ = 84 against κ = 5 with δ = 0.2: g = (84 − 4) / 5 = 16; clipped at 1 by default, at 10 with G = 10
    np.testing.assert_allclose(
        bandits.lagrangian_feedback(lambdas, 5.0, jnp.array(84.0), 5.0, margin=0.2), [0.5, 0.25, 0.0]
    )
    out = bandits.lagrangian_feedback(lambdas, 5.0, jnp.array(84.0), 5.0, margin=0.2, max_violation=10.0)
    np.testing.assert_allclose(out, [0.5, 0.5 * (1 - 0.5 * 10), 0.5 * (1 - 10)])  # (0.5, −2, −4.5)
    # slack is still counted up to one scale: Ĉ = 0 → g = −4 / 5 = −0.8 either way
    slack = bandits.lagrangian_feedback(lambdas, 5.0, jnp.array(0.0), 5.0, margin=0.2, max_violation=10.0)
    np.testing.assert_allclose(slack, [0.5, 0.7, 0.9])
    # A cost that jumps between 84 and 0: with G = 1 the rounds' g average (1 − 0.8) / 2 > 0 only slightly, as if
    # the policy were near the budget; with G = 20 they average (16 − 0.8) / 2 = 7.6, the true mean violation
    # ((84 + 0) / 2 − 4) / 5 = 7.6.
    g = lambda c, big: (
        1 - 2 * bandits.lagrangian_feedback(jnp.array([5.0]), 5.0, jnp.array(c), 5.0, margin=0.2, max_violation=big)
    )[0]
    assert (g(84.0, 20.0) + g(0.0, 20.0)) / 2 == pytest.approx(7.6)
    assert (g(84.0, 1.0) + g(0.0, 1.0)) / 2 == pytest.approx(0.1)


def test_lambda_unit_hand_values():
    # (s_r / s_c) ΔR / ΔC = 0.1 · (50 − 10) / (20 − 0) = 0.2
    assert bandits.lambda_unit(np.array([10.0, 30.0, 50.0]), np.array([0.0, 5.0, 20.0]), 0.1, 1.0) == pytest.approx(0.2)
    # no spread of costs (or rewards): the scales' ratio
    assert bandits.lambda_unit(np.array([10.0, 30.0]), np.array([3.0, 3.0]), 0.1, 1.0) == pytest.approx(0.1)
    assert bandits.lambda_unit(np.array([]), np.array([]), 2.0, 4.0) == pytest.approx(0.5)


def test_exp3box_keeps_the_log_weights_in_the_box_hand_values():
    # pulled arm 1 at p = 0.01 with loss 1: w_1 −= 0.5 · 1 / 0.01 = 50 → clipped at −W = −6; arm 0 unchanged
    new = bandits.update_bandit(
        _state([0.0, 0.0]), "exp3box", jnp.array(1), jnp.array([0.2, 1.0]), jnp.array([0.99, 0.01]), 0.5, 0.0
    )
    np.testing.assert_allclose(new.log_weights, [0.0, -bandits.MAX_GAP])
    # inside the box nothing else changes: plain EXP3 (w_0 −= 0.1 · 0.5 / 0.25 = 0.2, shifted by the max)
    new = bandits.update_bandit(
        _state([0.0, -1.0]), "exp3box", jnp.array(0), jnp.array([0.5, 0.9]), jnp.array([0.25, 0.75]), 0.1, 0.0
    )
    np.testing.assert_allclose(new.log_weights, [0.0, -0.8], rtol=1e-6)
    assert bandits.default_rates("exp3box", 5, 10_000, None, None) == (bandits.BOX_RATE, 0.0)
    assert bandits.default_rates("exp3s", 5, 10_000, None, None) == (bandits.TRACKING_RATE, bandits.TRACKING_SHARE)


@pytest.mark.parametrize("kind,share,bias", [("exp3box", 0.0, 0.1), ("exp3s", bandits.TRACKING_SHARE, None)])
def test_default_lambda_player_drives_a_responsive_cost_to_the_tightened_budget(kind, share, bias):
    """A closed loop with a known answer: the 'policy' is a low-pass filter of the drawn λ's cost
    c(λ) = 2 B e^{−λ}, so it integrates the rounds' λ as the oracle's networks do. The default λ-player (EXP3 on a
    box, η = 0.03, β = 8, margin δ = 0.2) must hold the filtered cost at (1 − δ) B on average over the last rounds,
    with λ = 0 (cost 2 B) and the largest arm (cost ≈ 0) both far from it. EXP3.S's share pulls the weights
    towards uniform, i.e. towards the mean arm λ = 2.5, so it settles on the safe side of the target (below it)."""
    budget, margin = 4.0, 0.2
    arms = jnp.asarray(bandits.arm_grid(5, 5.0))
    eta, _ = bandits.default_rates(kind, 5, 4000, None, None)

    def step(carry, key):
        state, cost = carry
        probs = bandits.arm_probabilities(state, kind, share, 8.0)
        arm = bandits.draw_arm(key, probs)
        cost = cost + 0.05 * (2 * budget * jnp.exp(-arms[arm]) - cost)
        losses = bandits.lagrangian_feedback(arms, 5.0, cost, budget, margin=margin)
        state = bandits.update_bandit(state, kind, arm, losses, probs, eta, share, 8.0)
        return (state, cost), cost

    _, costs = jax.lax.scan(
        step, (bandits.init_bandit(5), jnp.array(0.0)), jax.random.split(jax.random.PRNGKey(0), 4000)
    )
    tail = float(costs[-1000:].mean())
    target = (1 - margin) * budget
    if bias is not None:
        assert tail == pytest.approx(target, rel=bias)
    else:
        assert tail <= target


def test_hedgebox_updates_every_arm_with_its_own_loss_then_boxes_hand_values():
    # full information: w −= 0.5 · (0.2, 13) = (−0.1, −6.5) → shifted by the max (0, −6.4) → boxed at −6
    new = bandits.update_bandit(
        _state([0.0, 0.0]), "hedgebox", jnp.array(1), jnp.array([0.2, 13.0]), jnp.array([0.99, 0.01]), 0.5, 0.0
    )
    np.testing.assert_allclose(new.log_weights, [0.0, -bandits.MAX_GAP])
    # the drawn arm and its probability do not matter: w −= 0.1 · (0.5, 0.9) → (0, −0.04) from (0, 0)
    for arm, probs in ((0, [0.25, 0.75]), (1, [0.9, 0.1])):
        new = bandits.update_bandit(
            _state([0.0, 0.0]), "hedgebox", jnp.array(arm), jnp.array([0.5, 0.9]), jnp.array(probs), 0.1, 0.0
        )
        np.testing.assert_allclose(new.log_weights, [0.0, -0.04], rtol=1e-5)
    assert bandits.default_rates("hedgebox", 5, 10_000, None, None) == (bandits.BOX_RATE, 0.0)
    # no exploration mix in the draw
    p = bandits.arm_probabilities(_state([0.0, -1.0]), "hedgebox", 0.0)
    np.testing.assert_allclose(p, [1 / (1 + math.exp(-1)), 1 - 1 / (1 + math.exp(-1))], rtol=1e-6)


def test_the_mean_lambda_player_drives_a_cost_that_jumps_to_the_tightened_budget():
    """The adaptive player's loop on a cost that jumps: the 'policy' low-pass filters the cost of the mean λ of the
    draw, c(λ̄) = 2 B e^{−λ̄}, and every round's reading is 0 or 4 c (a policy on either side of a cliff; mean c).
    Hedge on the box with the averaged hint (ρ = 0.95) must hold
    the filtered cost's average over the last rounds at (1 − δ) B; λ̄ must not be thrown to the largest arm by single
    readings (the largest λ̄ over the last rounds stays below the top arm)."""
    budget, margin = 4.0, 0.2
    arms = jnp.asarray(bandits.arm_grid(5, 5.0))

    def step(carry, key):
        state, cost = carry
        k_draw, k_noise = jax.random.split(key)
        probs = bandits.arm_probabilities(state, "hedgebox", 0.0, 8.0)
        arm = bandits.draw_arm(k_draw, probs)
        lam = jnp.dot(probs, arms)
        cost = cost + 0.05 * (2 * budget * jnp.exp(-lam) - cost)
        reading = jnp.where(jax.random.bernoulli(k_noise, 0.25), 4 * cost, 0.0)
        losses = bandits.lagrangian_feedback(arms, 5.0, reading, budget, margin=margin, max_violation=20.0)
        state = bandits.update_bandit(
            state, "hedgebox", arm, losses, probs, bandits.BOX_RATE, 0.0, 8.0, hint_decay=0.95
        )
        return (state, cost), (cost, lam)

    _, (costs, lams) = jax.lax.scan(
        step, (bandits.init_bandit(5), jnp.array(0.0)), jax.random.split(jax.random.PRNGKey(0), 4000)
    )
    assert float(costs[-1000:].mean()) == pytest.approx((1 - margin) * budget, rel=0.1)
    assert float(lams[-1000:].max()) < float(arms[-1])
