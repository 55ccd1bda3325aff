"""Exact checks on finite CMDPs: evaluation by hand, LP against enumeration, and tabular O3SRL against the LP."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from o3srl import tabular as tb


def two_state_cycle() -> tb.CMDP:
    """s0 → s1 → s0 → …, one action; r = (1, 0), c = (0, 4), γ = ½, start in s0, episodes of 3 steps."""
    p = np.array([[[0.0, 1.0]], [[1.0, 0.0]]])
    return tb.CMDP(p, np.array([[1.0], [0.0]]), np.array([[0.0], [4.0]]), np.array([1.0, 0.0]), 0.5, 3)


def tiny_random(seed: int) -> tb.CMDP:
    return tb.random_cmdp(num_states=4, num_actions=2, concentration=1.0, cost_probability=0.5, gamma=0.9, horizon=20, seed=seed)


def enumerate_deterministic(cmdp: tb.CMDP, budget: float) -> tuple[float, float]:
    """Best feasible deterministic policy by brute force over all A^S policies: (reward, cost)."""
    best = (-np.inf, np.nan)
    for actions in itertools.product(range(cmdp.num_actions), repeat=cmdp.num_states):
        v = tb.evaluate(cmdp, np.array(actions))
        if v.cost <= budget + 1e-9 and v.reward > best[0]:
            best = (v.reward, v.cost)
    return best


def test_policy_evaluation_by_hand() -> None:
    # V_r(s0) = 1 + ½ V_r(s1), V_r(s1) = ½ V_r(s0)  →  V_r(s0) = 4/3;  V_c(s0) = ½ (4 + ½ V_c(s0))  →  V_c(s0) = 8/3.
    cmdp = two_state_cycle()
    v = tb.evaluate(cmdp, np.array([0, 0]))
    assert v.reward == pytest.approx(4 / 3)
    assert v.cost == pytest.approx(8 / 3)
    # One undiscounted 3-step episode: s0, s1, s0 → reward 1 + 0 + 1, cost 0 + 4 + 0.
    e = tb.evaluate_episode(cmdp, np.array([0, 0]))
    assert (e.reward, e.cost) == pytest.approx((2.0, 4.0))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lp_against_enumeration(seed: int) -> None:
    cmdp = tiny_random(seed)
    unconstrained = tb.solve_lp(cmdp, None)
    # Unconstrained LP = value iteration.
    assert unconstrained.reward == pytest.approx(tb.evaluate(cmdp, tb.value_iteration(cmdp, cmdp.rewards)).reward, rel=1e-6)
    least = tb.solve_lp(cmdp, -1.0)
    assert not least.feasible
    budget = least.cost + 0.5 * (unconstrained.cost - least.cost)
    lp = tb.solve_lp(cmdp, budget)
    det_reward, _ = enumerate_deterministic(cmdp, budget)
    milp = tb.solve_deterministic(cmdp, budget)
    assert lp.feasible and milp.feasible
    # The LP's policy really has the values it claims, meets the budget, and beats every deterministic policy.
    exact = tb.evaluate(cmdp, lp.policy)
    assert exact.reward == pytest.approx(lp.reward, rel=1e-6)
    assert exact.cost <= budget + 1e-6
    assert lp.reward >= det_reward - 1e-6
    assert milp.reward == pytest.approx(det_reward, rel=1e-6)
    assert milp.cost <= budget + 1e-6
    # Strong duality: the multiplier makes the LP value the max of the Lagrangian over deterministic policies.
    lagrangian = max(
        tb.evaluate(cmdp, np.array(a)).reward - lp.multiplier * (tb.evaluate(cmdp, np.array(a)).cost - budget)
        for a in itertools.product(range(cmdp.num_actions), repeat=cmdp.num_states)
    )
    assert lagrangian == pytest.approx(lp.reward, rel=1e-5)


def test_episodic_lp_bounds_stationary_policies() -> None:
    cmdp = tiny_random(3)
    lp = tb.solve_lp(cmdp, tb.solve_lp(cmdp, None).cost * 0.5)
    stationary = tb.evaluate_episode(cmdp, lp.policy)
    episodic = tb.solve_episodic_lp(cmdp, stationary.cost)
    assert episodic.cost <= stationary.cost + 1e-6
    assert episodic.reward >= stationary.reward - 1e-6
    assert tb.evaluate_episode(cmdp, episodic.policy).reward == pytest.approx(episodic.reward, rel=1e-6)


def test_dataset_and_empirical_model() -> None:
    cmdp = tiny_random(0)
    data = tb.sample_dataset(cmdp, tb.behaviour_policy(cmdp, 1.0), episodes=400, seed=0)
    assert data["timeouts"].sum() == 400 and not data["terminals"].any()
    assert np.all(data["observations"][1:][~data["timeouts"][:-1]] == data["next_observations"][:-1][~data["timeouts"][:-1]])
    model, counts = tb.empirical_model(data, cmdp.num_states, cmdp.num_actions, cmdp.gamma, cmdp.horizon)
    assert counts.sum() == len(data["rewards"])
    assert np.abs(model.transitions - cmdp.transitions).max() < 0.1
    assert np.allclose(model.rewards, cmdp.rewards, atol=1e-5)
    assert np.abs(model.initial - cmdp.initial).max() < 0.1
