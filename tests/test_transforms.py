"""Pure functions of the method against hand-computed values."""

import math

import numpy as np
import pytest

from o3srl.transforms import (
    budget_per_step,
    budget_value,
    is_safe,
    make_budget,
    normalized_cost,
    normalized_reward,
    safe_mask,
    shaped_reward,
    shaped_value,
)


def test_shaped_reward_hand_values():
    # r − λ (c − b): 1 − 2 (1 − 0.1) = −0.8 ; 1 − 2 (0 − 0.1) = 1.2
    assert shaped_reward(1.0, 1.0, 2.0, 0.1) == pytest.approx(-0.8)
    assert shaped_reward(1.0, 0.0, 2.0, 0.1) == pytest.approx(1.2)
    assert shaped_reward(3.0, 5.0, 0.0, 0.7) == pytest.approx(3.0)
    r, c = np.array([1.0, 2.0]), np.array([0.0, 1.0])
    np.testing.assert_allclose(shaped_reward(r, c, 0.5, 0.2), [1.1, 1.6])


def test_shaped_value_is_the_value_of_the_shaped_reward():
    # A 3-step discounted chain: the discounted sum of shaped rewards equals Q_r − λ (Q_c − b/(1−γ)) only for an
    # infinite horizon; check it on a constant stream, where both are closed form.
    gamma, lam, b, r, c = 0.9, 1.5, 0.2, 1.0, 0.5
    q_r, q_c = r / (1 - gamma), c / (1 - gamma)
    direct = shaped_reward(r, c, lam, b) / (1 - gamma)
    assert shaped_value(q_r, q_c, lam, b, gamma) == pytest.approx(direct)
    # and the budget term equals λ b / (1 − γ): 1.5 · 0.2 / 0.1 = 3
    assert shaped_value(0.0, 0.0, lam, b, gamma) == pytest.approx(3.0)


def test_budget_conversions_hand_values():
    # osrl: κ (1 − γ^T) / T ; κ = 10, γ = 0.5, T = 2: 10 · 0.75 / 2 = 3.75 per step, value 7.5
    assert budget_per_step(10, 0.5, 2, "osrl") == pytest.approx(3.75)
    assert budget_value(3.75, 0.5) == pytest.approx(7.5)
    # average: κ / T = 5 per step
    assert budget_per_step(10, 0.5, 2, "average") == pytest.approx(5.0)
    # discounted: (1 − γ) κ = 5 per step, value κ = 10
    assert budget_per_step(10, 0.5, 2, "discounted") == pytest.approx(5.0)
    assert budget_value(budget_per_step(10, 0.99, 100, "discounted"), 0.99) == pytest.approx(10.0)
    # OSRL's qc_thres for κ = 5, γ = 0.99, T = 100: 5 (1 − 0.99^100) / (0.01 · 100)
    expected = 5 * (1 - 0.99**100) / (0.01 * 100)
    assert budget_value(budget_per_step(5, 0.99, 100, "osrl"), 0.99) == pytest.approx(expected)
    assert budget_per_step(0, 0.99, 100) == 0.0


def test_make_budget_hand_values():
    # κ = 10, γ = 0.5, T = 2, osrl: b = 3.75, b / (1 − γ) = 7.5; with cost_scale 4 the critics' B is 30, reported 7.5
    budget = make_budget(10, 0.5, 2, "osrl", cost_scale=4.0)
    assert budget.cost_limit == 10
    assert budget.per_step == pytest.approx(3.75)
    assert budget.value == pytest.approx(30.0)
    assert budget.reported_value == pytest.approx(7.5)
    # the same floating-point operations as the conversions it is made of
    b = budget_per_step(5, 0.99, 1000, "average")
    scaled = make_budget(5, 0.99, 1000, "average", cost_scale=3.0)
    assert scaled.per_step == b and scaled.value == 3.0 * budget_value(b, 0.99)
    assert scaled.reported_value == 3.0 * budget_value(b, 0.99) / 3.0
    with pytest.raises(ValueError):
        make_budget(-1, 0.99, 100)


@pytest.mark.parametrize("bad", [dict(cost_limit=-1), dict(gamma=1.0), dict(episode_length=0)])
def test_budget_rejects_bad_input(bad):
    args = dict(cost_limit=5.0, gamma=0.99, episode_length=100) | bad
    with pytest.raises(ValueError):
        budget_per_step(**args)
    with pytest.raises(ValueError, match="unknown budget convention"):
        budget_per_step(5, 0.99, 100, "nope")  # type: ignore[arg-type]


def test_normalisation_hand_values():
    # DSRL BallRun constants: (700 − 26.34) / (1327.4 − 26.34)
    assert normalized_reward(700.0, 26.34, 1327.4) == pytest.approx((700 - 26.34) / (1327.4 - 26.34))
    assert normalized_reward(26.34, 26.34, 1327.4) == 0.0
    assert normalized_cost(5.0, 5.0) == 1.0
    assert normalized_cost(7.5, 5.0) == 1.5
    # κ = 0: (C + 1) / (0 + 1)
    assert normalized_cost(0.0, 0.0) == 1.0
    assert normalized_cost(2.0, 0.0) == 3.0
    assert is_safe(1.0) and not is_safe(1.0000001) and not is_safe(float("nan"))
    assert safe_mask([0.0, 1.0, 1.0000001, float("nan")]).tolist() == [True, True, False, False]
    with pytest.raises(ValueError):
        normalized_reward(1.0, 2.0, 2.0)
    assert math.isclose(normalized_cost(np.array([0.0, 10.0]), 10.0)[1], 1.0)
