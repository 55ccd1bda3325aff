"""Small pure functions of the method: shaped reward, budget conversion, score normalisation.

Each works on numpy arrays, JAX arrays and Python floats alike (only arithmetic is used), and each is tested
against hand-computed values in ``tests/test_transforms.py``.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple, TypeVar

import numpy as np

A = TypeVar("A")

BudgetConvention = Literal["osrl", "average", "discounted"]


def shaped_reward(reward: A, cost: A, lam: A | float, budget_step: float) -> A:
    """The Lagrangian per-step reward ``r − λ (c − b)`` with per-step budget ``b``.

    Summed with discount γ over an episode this is ``V_r − λ (V_c − b / (1 − γ))``: the λ-player's Lagrangian with
    the episodic budget spread over time.
    """
    return reward - lam * (cost - budget_step)  # type: ignore[operator,return-value]


def shaped_value(q_reward: A, q_cost: A, lam: A | float, budget_step: A | float, gamma: float) -> A:
    """The value of :func:`shaped_reward` from separate reward and cost values.

    By linearity of the Bellman equation, ``Q_{r−λ(c−b)} = Q_r − λ (Q_c − b / (1 − γ))`` for the same policy, so one
    pair of critics (Q_r, Q_c) serves every λ.
    """
    return q_reward - lam * (q_cost - budget_step / (1.0 - gamma))  # type: ignore[operator,return-value]


def budget_per_step(
    cost_limit: float, gamma: float, episode_length: int, convention: BudgetConvention = "osrl"
) -> float:
    """Convert the episodic, undiscounted cost limit κ into the per-step budget ``b`` used with the critics.

    ``"osrl"``: assume the κ allowed cost units are spread evenly over the T steps of an episode (κ / T per step) and
    discount them as the critic does: the value threshold is ``κ (1 − γ^T) / ((1 − γ) T)`` (OSRL's ``qc_thres``), so
    ``b = κ (1 − γ^T) / T``.
    ``"average"``: the κ / T average cost per step, ``b = κ / T``: the right budget for critics that bootstrap through
    timeouts (as ours do), whose values are those of the stationary, infinite-horizon problem.
    ``"discounted"``: read κ itself as the limit on the discounted cost value, ``b = (1 − γ) κ``.
    The value threshold on ``Q_c`` is always ``b / (1 − γ)`` (:func:`budget_value`).
    """
    if cost_limit < 0:
        raise ValueError(f"cost limit must be ≥ 0, got {cost_limit}")
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1), got {gamma}")
    if convention in ("osrl", "average"):
        if episode_length <= 0:
            raise ValueError(f"episode length must be positive, got {episode_length}")
        horizon = (1.0 - gamma**episode_length) if convention == "osrl" else 1.0
        return float(cost_limit * horizon / episode_length)
    if convention == "discounted":
        return float((1.0 - gamma) * cost_limit)
    raise ValueError(f"unknown budget convention {convention!r}; use 'osrl', 'average' or 'discounted'")


def budget_value(budget_step: float, gamma: float) -> float:
    """The threshold on the discounted cost value that a per-step budget ``b`` stands for: ``b / (1 − γ)``."""
    return float(budget_step / (1.0 - gamma))


class Budget(NamedTuple):
    """The cost limit κ in each unit the method reads it in, computed once by :func:`make_budget`."""

    cost_limit: float
    """κ: the limit on the expected undiscounted episode cost (the data's units)."""
    per_step: float
    """b: the per-step budget of the shaped reward ``r − λ (c − b)``, in the data's units (:func:`budget_per_step`);
    an oracle scales it with its costs."""
    value: float
    """B = ``cost_scale`` · b / (1 − γ): the threshold on the discounted cost value, in the critics' (scaled) units,
    what the λ-player compares the critics' Ĉ with."""
    reported_value: float
    """B / ``cost_scale``: the same threshold read back in the data's units, as ``run.json`` and the metric
    ``feedback/budget`` report it."""


def make_budget(
    cost_limit: float,
    gamma: float,
    episode_length: int,
    convention: BudgetConvention = "osrl",
    cost_scale: float = 1.0,
) -> Budget:
    """The budget of cost limit κ for critics with discount γ whose costs are multiplied by ``cost_scale``: the one
    place where κ becomes b and B (:class:`Budget`)."""
    per_step = budget_per_step(cost_limit, gamma, episode_length, convention)
    value = cost_scale * budget_value(per_step, gamma)
    return Budget(cost_limit=cost_limit, per_step=per_step, value=value, reported_value=value / cost_scale)


def normalized_reward(episode_reward: A, min_reward: float, max_reward: float) -> A:
    """DSRL's normalised reward ``(R − R_min) / (R_max − R_min)``."""
    if max_reward <= min_reward:
        raise ValueError(f"reference max reward {max_reward} must exceed min reward {min_reward}")
    return (episode_reward - min_reward) / (max_reward - min_reward)  # type: ignore[operator,return-value]


def normalized_cost(episode_cost: A, cost_limit: float) -> A:
    """DSRL's normalised cost ``(C + ε) / (κ + ε)`` with ε = 1 when κ = 0 and 0 otherwise; safe ⇔ ≤ 1."""
    if cost_limit < 0:
        raise ValueError(f"cost limit must be ≥ 0, got {cost_limit}")
    eps = 1.0 if cost_limit == 0 else 0.0
    return (episode_cost + eps) / (cost_limit + eps)  # type: ignore[operator,return-value]


def is_safe(norm_cost: float) -> bool:
    """DSRL's safety criterion on a normalised cost (a NaN cost is not safe); the one rule tables and summaries
    apply."""
    return bool(safe_mask(norm_cost))


def safe_mask(norm_costs: Any) -> np.ndarray:
    """:func:`is_safe` element-wise, for arrays of normalised costs (NaN: not safe)."""
    return np.asarray(norm_costs, dtype=np.float64) <= 1.0
