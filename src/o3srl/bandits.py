"""The λ-player: bandits over a grid of Lagrange multipliers, and the arm feedback.

Everything here is a pure function of a small state, written with ``jax.numpy`` so that the O3SRL round (M oracle
steps, the bandit draw and the bandit update) compiles into one call. Losses are in [0, 1]; lower is better for the
λ-player, who *minimises* the Lagrangian ``L(π, λ) = V_r(π) − λ (V_c(π) − B)``.

Bandits
    ``exp3``     importance-weighted EXP3 with an exploration mix (Auer et al., 2002):
                 ``p = (1 − γ) softmax(w) + γ / K``; only the pulled arm is updated, ``w_k −= η ℓ_k / p_k``.
    ``exp3ix``   EXP3-IX (Neu, 2015): ``p = softmax(w)``, ``w_k −= η ℓ_k / (p_k + γ_ix)`` (implicit exploration).
    ``hedge``    full information: every arm's loss is observed, ``w −= η ℓ``. Usable because the critic-based
                 feedbacks below give the loss of *every* arm from one pair of critics.

Feedback (the paper leaves it open; see docs/algorithms/o3srl.md)
    ``lagrangian``  ``ℓ_k = ½ (1 − (λ_k / C) g)``, ``g = clip((Ĉ − B) / s, −1, 1)``: the λ-dependent part of the
                    Lagrangian of the current policy, from the cost critic's estimate Ĉ of V_c(π) and the value
                    budget B, scaled by ``s = max(B, min_scale)`` and mapped affinely into [0, 1]. When the policy is
                    estimated to violate the budget (g > 0), large λ has the smallest loss; with slack, λ = 0 does.
    ``shaped``      ``ℓ_k = ½ (1 + clip((R̂ − λ_k (Ĉ − B)) / S, −1, 1))``: the whole Lagrangian including the reward
                    value R̂, with a fixed scale S (the largest possible |Lagrangian| given the data's reward and
                    cost ranges). R̂ does not depend on the arm, so it only adds a common shift (and, for EXP3,
                    variance).
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp

BanditKind = Literal["exp3", "exp3ix", "hedge"]
FeedbackKind = Literal["lagrangian", "shaped"]


class BanditState(NamedTuple):
    """Log-weights of the K arms and the number of updates made."""

    log_weights: jax.Array  # (K,)
    rounds: jax.Array  # () int32


def init_bandit(num_arms: int) -> BanditState:
    return BanditState(log_weights=jnp.zeros((num_arms,), jnp.float32), rounds=jnp.zeros((), jnp.int32))


def arm_grid(num_arms: int, max_lambda: float) -> list[float]:
    """The uniform grid ``linspace(0, C, K)``: λ = 0 (unconstrained) is always one arm."""
    if num_arms < 1:
        raise ValueError(f"need at least one arm, got K = {num_arms}")
    if max_lambda < 0:
        raise ValueError(f"the largest λ must be ≥ 0, got C = {max_lambda}")
    if num_arms == 1:
        return [float(max_lambda)]
    return [max_lambda * k / (num_arms - 1) for k in range(num_arms)]


def default_learning_rate(num_arms: int, num_rounds: int) -> float:
    """EXP3's textbook rate ``η = sqrt(2 ln K / (K n))`` for n rounds (Bubeck & Cesa-Bianchi, 2012, Thm 3.1)."""
    k = max(num_arms, 2)
    return math.sqrt(2.0 * math.log(k) / (k * max(num_rounds, 1)))


def default_exploration(num_arms: int, num_rounds: int) -> float:
    """Auer et al.'s (2002) exploration mix ``γ = min(1, sqrt(K ln K / ((e − 1) n)))``."""
    k = max(num_arms, 2)
    return min(1.0, math.sqrt(k * math.log(k) / ((math.e - 1.0) * max(num_rounds, 1))))


def arm_probabilities(state: BanditState, kind: BanditKind, exploration: float) -> jax.Array:
    """The distribution the next arm is drawn from."""
    p = jax.nn.softmax(state.log_weights)
    if kind == "exp3":
        k = state.log_weights.shape[0]
        p = (1.0 - exploration) * p + exploration / k
    return p


def draw_arm(key: jax.Array, probs: jax.Array) -> jax.Array:
    return jax.random.choice(key, probs.shape[0], p=probs)


def update_bandit(
    state: BanditState,
    kind: BanditKind,
    arm: jax.Array,
    losses: jax.Array,
    probs: jax.Array,
    learning_rate: float,
    exploration: float,
) -> BanditState:
    """One bandit update. ``losses`` holds every arm's loss; the bandit kinds differ in what they may look at.

    EXP3 and EXP3-IX only use ``losses[arm]`` (the pulled arm) with an importance weight; Hedge uses all of them.
    """
    if kind == "hedge":
        estimate = losses
    else:
        pulled = jax.nn.one_hot(arm, losses.shape[0], dtype=losses.dtype)
        denom = probs[arm] + (exploration if kind == "exp3ix" else 0.0)
        estimate = pulled * losses[arm] / denom
    log_w = state.log_weights - learning_rate * estimate
    # Shift by the max to keep the log-weights bounded; probabilities are unchanged.
    log_w = log_w - jnp.max(log_w)
    return BanditState(log_weights=log_w, rounds=state.rounds + 1)


def lagrangian_feedback(
    lambdas: jax.Array, max_lambda: float, cost_estimate: jax.Array, budget: float | jax.Array, min_scale: float = 1.0
) -> jax.Array:
    """Losses of every arm from the λ-dependent part of the Lagrangian, in [0, 1] (see module docstring)."""
    # jnp.maximum (not max) so that the budget may be a traced value, e.g. one compiled loop for many budgets.
    scale = jnp.maximum(budget, min_scale)
    g = jnp.clip((cost_estimate - budget) / scale, -1.0, 1.0)
    c = max(max_lambda, 1e-12)
    return 0.5 * (1.0 - (lambdas / c) * g)


def shaped_feedback(
    lambdas: jax.Array, reward_estimate: jax.Array, cost_estimate: jax.Array, budget: float, value_scale: float
) -> jax.Array:
    """Losses of every arm from the whole Lagrangian ``R̂ − λ_k (Ĉ − B)``, in [0, 1] (see module docstring)."""
    lagrangian = reward_estimate - lambdas * (cost_estimate - budget)
    return 0.5 * (1.0 + jnp.clip(lagrangian / value_scale, -1.0, 1.0))


def ogd_lambda_step(lam: jax.Array, cost_estimate: jax.Array, budget: float, learning_rate: float,
                    max_lambda: float) -> jax.Array:
    """Algorithm 1's continuous λ-player: projected online gradient descent on the loss ``−λ (V̂_c − B)``.

    The gradient of the loss in λ is ``−(V̂_c − B)``, so the step is ``λ ← Π_[0, C](λ + η (V̂_c − B))``: λ rises
    while the iterate is estimated to overspend the budget and falls (to 0 at most) while it has slack.
    """
    return jnp.clip(lam + learning_rate * (cost_estimate - budget), 0.0, max_lambda)
