"""The λ-player: bandits over a grid of Lagrange multipliers, and the arm feedback.

Everything here is a pure function of a small state, written with ``jax.numpy`` so that the O3SRL round (M oracle
steps, the bandit draw and the bandit update) compiles into one call. Losses are in [0, 1]; lower is better for the
λ-player, who *minimises* the Lagrangian ``L(π, λ) = V_r(π) − λ (V_c(π) − B)``.

Bandits
    ``exp3``     importance-weighted EXP3 with an exploration mix (Auer et al., 2002):
                 ``p = (1 − γ) softmax(w) + γ / K``; only the pulled arm is updated, ``w_k −= η ℓ_k / p_k``.
    ``exp3ix``   EXP3-IX (Neu, 2015): ``p = softmax(w)``, ``w_k −= η ℓ_k / (p_k + γ_ix)`` (implicit exploration).
    ``exp3box``  EXP3 on a box (the adaptive λ-player's bandit): the importance-weighted EXP3 update, then no arm's
                 log-weight may fall more than ``W = max_gap`` below the best one's (a projection onto the truncated
                 simplex ``p_k ≥ e^{−W} max_j p_j``). Inside the box nothing pulls the weights anywhere, so the λ-player
                 integrates its losses exactly (with linear losses in λ it settles where the violation averages
                 zero); the box bounds how far the weights can wind up, so it turns around within ≈ W / (η Δℓ)
                 rounds when the oracle's drift changes which arm is best, and it keeps every arm's probability
                 above ≈ e^{−W} / K (its exploration). Mirror descent on the truncated simplex keeps EXP3's regret
                 against every fixed arm (plus the truncation's O(K e^{−W} n)) and bounds the regret against every
                 *sequence* of arms with S switches by O((S W + ln K) / η + η K n) (Herbster & Warmuth, 2001).
    ``exp3s``    EXP3 with fixed share (the tracking form of EXP3, Auer et al., 2002, §8; Herbster & Warmuth, 1998):
                 ``p = softmax(w)``; the pulled arm's importance-weighted loss updates ``w``, then the weights are
                 mixed with the uniform distribution, ``p ← (1 − α) p + α / K``. The share α keeps every arm's
                 probability ≥ α / K (the exploration) and bounds how far the weights can drift apart, so the
                 bandit can follow losses that change over time: its regret is bounded against every *sequence*
                 of arms with S switches (O(√(S K n ln(K n))) for tuned η and α), not only against the best fixed
                 arm. The share pulls the weights towards uniform in every round, which biases a λ-player
                 settled at λ* towards the mean arm (measured: the settled λ sits above λ*); kept for ablations.
    ``hedgebox`` Hedge on the same box: every arm's loss updates its weight (no importance weighting), then the
                 box's projection. The adaptive λ-player's bandit when its oracle trains on the mean λ of the draw
                 (``oracle_lambda = "mean"``): the lagrangian feedback gives every arm's loss from the one Ĉ of the
                 one policy, and that policy does not depend on which arm was drawn, so the λ-player has full
                 information; EXP3's importance weight ``1 / p_k`` only adds noise, and with losses that jump (a
                 violation counted up to G budget scales) one draw of an arm at p ≈ e^{−W} can move it to the top
                 in one round. The regret bounds are Hedge's: O(√(n ln K)) against every fixed arm for a tuned η,
                 and the switching bound above with K n replaced by n.
    ``hedge``    full information: every arm's loss is observed, ``w −= η ℓ``. Usable because the critic-based
                 feedbacks below give the loss of *every* arm from one pair of critics.

Feedback (the paper leaves it open; see docs/algorithms/o3srl.md)
    ``lagrangian``  ``ℓ_k = ½ (1 − (λ_k / C) g)``, ``g = clip((Ĉ − (1 − δ) B) / s, −1, 1)``: the λ-dependent part
                    of the Lagrangian of the current policy, from the cost critic's estimate Ĉ of V_c(π) and the value
                    budget B, scaled by ``s = max(B, min_scale)`` and mapped affinely into [0, 1]. When the policy is
                    estimated to violate the budget (g > 0), large λ has the smallest loss; with slack, λ = 0 does.
                    The margin δ ∈ [0, 1) plays the game against the slightly tighter budget (1 − δ) B, so that the
                    last iterate, which ends near the boundary of the game it plays, errs on the safe side of B.
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
import numpy as np

BanditKind = Literal["exp3box", "hedgebox", "exp3", "exp3s", "exp3ix", "hedge"]
FeedbackKind = Literal["lagrangian", "shaped"]


class BanditState(NamedTuple):
    """Log-weights of the K arms, the number of updates made, and the hint: the last round's loss of every arm
    (the optimistic prediction of the next round's losses; zero when optimism is off)."""

    log_weights: jax.Array  # (K,)
    rounds: jax.Array  # () int32
    hint: jax.Array  # (K,)


def init_bandit(num_arms: int) -> BanditState:
    zeros = jnp.zeros((num_arms,), jnp.float32)
    return BanditState(log_weights=zeros, rounds=jnp.zeros((), jnp.int32), hint=zeros)


def arm_grid(num_arms: int, max_lambda: float) -> list[float]:
    """The uniform grid ``linspace(0, C, K)``: λ = 0 (unconstrained) is always one arm."""
    if num_arms < 1:
        raise ValueError(f"need at least one arm, got K = {num_arms}")
    if max_lambda < 0:
        raise ValueError(f"the largest λ must be ≥ 0, got C = {max_lambda}")
    if num_arms == 1:
        return [float(max_lambda)]
    return [max_lambda * k / (num_arms - 1) for k in range(num_arms)]


def lambda_unit(
    episode_rewards: np.ndarray, episode_costs: np.ndarray, reward_scale: float = 1.0, cost_scale: float = 1.0
) -> float:
    """The natural unit of λ for a dataset, in the critics' units: ``(s_r / s_c) · ΔR / ΔC``.

    ΔR and ΔC are the ranges of the episodes' reward and cost returns, so the unit is the average rate at which the
    data trades reward for cost (the mean slope of its reward–cost cloud); the constrained optimum's multiplier λ*
    is the local slope of the reward–cost frontier at κ, so it is of this order. ``s_r`` and ``s_c`` are the
    factors the critics scale rewards and costs by (the shaped reward is ``s_r r − λ s_c (c − b)``). A dataset
    without a spread of both returns gives ``s_r / s_c``.
    """
    r = np.asarray(episode_rewards, np.float64)
    c = np.asarray(episode_costs, np.float64)
    ratio = reward_scale / cost_scale
    if r.size == 0 or c.size == 0:
        return float(ratio)
    d_r, d_c = float(r.max() - r.min()), float(c.max() - c.min())
    if not (math.isfinite(d_r) and math.isfinite(d_c)) or d_r <= 0.0 or d_c <= 0.0:
        return float(ratio)
    return float(ratio * d_r / d_c)


BOX_RATE = 0.03
"""exp3box's default rate η (the integral gain; with the optimism β = 8 as the proportional one): measured on the
tabular CMDPs (docs/results/tabular.md), where η ∈ [0.01, 0.03] with β ∈ [4, 8] kept all 45 last iterates safe and
η = 0.1 with β = 4 did not (39/45)."""
TRACKING_RATE = 0.2
"""EXP3.S's default rate η (measured on the tabular CMDPs with its share α = 0.01)."""
TRACKING_SHARE = 0.01
"""EXP3.S's default share α: every arm keeps probability ≥ α / K."""
MAX_GAP = 6.0
"""exp3box's default box W: no arm's log-weight more than 6 below the best (probability ≥ e^{−6} ≈ 0.0025 of the
best arm's)."""


def default_rates(
    kind: BanditKind, num_arms: int, num_rounds: int, learning_rate: float | None, exploration: float | None
) -> tuple[float, float]:
    """(η, γ): the given values, or each bandit's default (tracking rates for exp3box / exp3s, textbook ones else)."""
    if learning_rate is None:
        if kind in ("exp3box", "hedgebox"):
            learning_rate = BOX_RATE
        else:
            learning_rate = TRACKING_RATE if kind == "exp3s" else default_learning_rate(num_arms, num_rounds)
    if exploration is None:
        if kind in ("exp3box", "hedgebox"):
            exploration = 0.0
        else:
            exploration = TRACKING_SHARE if kind == "exp3s" else default_exploration(num_arms, num_rounds)
    return float(learning_rate), float(exploration)


def default_learning_rate(num_arms: int, num_rounds: int) -> float:
    """EXP3's textbook rate ``η = sqrt(2 ln K / (K n))`` for n rounds (Bubeck & Cesa-Bianchi, 2012, Thm 3.1)."""
    k = max(num_arms, 2)
    return math.sqrt(2.0 * math.log(k) / (k * max(num_rounds, 1)))


def default_exploration(num_arms: int, num_rounds: int) -> float:
    """Auer et al.'s (2002) exploration mix ``γ = min(1, sqrt(K ln K / ((e − 1) n)))``."""
    k = max(num_arms, 2)
    return min(1.0, math.sqrt(k * math.log(k) / ((math.e - 1.0) * max(num_rounds, 1))))


def arm_probabilities(
    state: BanditState, kind: BanditKind, exploration: float | jax.Array, optimism: float | jax.Array = 0.0
) -> jax.Array:
    """The distribution the next arm is drawn from: ``softmax(w − β m)`` with the hint m (the last losses) and the
    optimism β (0: the plain algorithm), mixed with the uniform distribution by ``exploration`` for EXP3 / EXP3.S."""
    p = jax.nn.softmax(state.log_weights - optimism * state.hint)
    if kind in ("exp3", "exp3s", "exp3box"):
        k = state.log_weights.shape[0]
        p = (1.0 - exploration) * p + exploration / k
    return p


def draw_arm(key: jax.Array, probs: jax.Array) -> jax.Array:
    return jax.random.choice(key, probs.shape[0], p=probs)


def played_lambda(arms: jax.Array, probs: jax.Array, arm: jax.Array, oracle_lambda: str) -> jax.Array:
    """The λ the oracle trains on this round: the drawn arm (``"drawn"``, the paper's), or the mean of the
    distribution the arm was drawn from, ``Σ_k p_k λ_k`` (``"mean"``; the best response to the λ-player's mixed
    strategy, the Lagrangian being linear in λ)."""
    return jnp.dot(probs, arms) if oracle_lambda == "mean" else arms[arm]


def update_bandit(
    state: BanditState,
    kind: BanditKind,
    arm: jax.Array,
    losses: jax.Array,
    probs: jax.Array,
    learning_rate: float | jax.Array,
    exploration: float | jax.Array,
    optimism: float | jax.Array = 0.0,
    hint_losses: jax.Array | None = None,
    max_gap: float | jax.Array = MAX_GAP,
    hint_decay: float | jax.Array = 0.0,
) -> BanditState:
    """One bandit update. ``losses`` holds every arm's loss; the bandit kinds differ in what they may look at.

    EXP3, EXP3.S and EXP3-IX only use ``losses[arm]`` (the pulled arm) with an importance weight; Hedge uses all of
    them. The bandits' estimate is ``ℓ̂ = m + e_k (ℓ_k − m_k) / p_k`` with the hint m held in the state (zero
    without optimism: plain importance weighting), unbiased whatever m is; when m is close to ℓ its variance is
    small. For EXP3.S, ``exploration`` is also the share α mixed into the weights after the update; for EXP3 on a
    box, ``max_gap`` is the box's width W.
    With ``optimism`` > 0 the next hint is ``hint_losses`` (default ``losses``): every arm's loss computed this round,
    which the next draw anticipates (optimistic EXP3 / optimistic Hedge). With ``hint_decay`` ρ > 0 the hint is the
    exponential average of the losses instead, ``m ← ρ m + (1 − ρ) ℓ`` (the first update sets ``m = ℓ``): where the
    losses jump from round to round around a slowly moving mean, the average predicts the next loss better than
    the last one does, and the optimistic bounds depend on ``Σ_t (ℓ_t − m_t)²``. Any hint computed from past
    losses keeps the estimate unbiased.
    """
    if kind in ("hedge", "hedgebox"):
        estimate = losses
    else:
        pulled = jax.nn.one_hot(arm, losses.shape[0], dtype=losses.dtype)
        denom = probs[arm] + (exploration if kind == "exp3ix" else 0.0)
        estimate = state.hint + pulled * (losses[arm] - state.hint[arm]) / denom
    log_w = state.log_weights - learning_rate * estimate
    if kind == "exp3s":
        k = losses.shape[0]
        mixed = (1.0 - exploration) * jax.nn.softmax(log_w) + exploration / k
        log_w = jnp.log(mixed)
    # Shift by the max to keep the log-weights bounded; probabilities are unchanged.
    log_w = log_w - jnp.max(log_w)
    if kind in ("exp3box", "hedgebox"):
        # A box on the log-weights: no arm falls more than max_gap below the best, so the weights can turn around
        # within a bounded number of rounds (the anti-windup of a controller), without the share's pull to uniform.
        log_w = jnp.maximum(log_w, -max_gap)
    new_hint = losses if hint_losses is None else hint_losses
    decay = jnp.where(state.rounds > 0, jnp.asarray(hint_decay, new_hint.dtype), 0.0)
    new_hint = decay * state.hint + (1.0 - decay) * new_hint
    hint = jnp.where(jnp.asarray(optimism) > 0, new_hint, jnp.zeros_like(state.hint))
    return BanditState(log_weights=log_w, rounds=state.rounds + 1, hint=hint.astype(state.hint.dtype))


def lagrangian_feedback(
    lambdas: jax.Array,
    max_lambda: float,
    cost_estimate: jax.Array,
    budget: float | jax.Array,
    min_scale: float = 1.0,
    margin: float | jax.Array = 0.0,
    relative_scale: float | jax.Array = 1.0,
    max_violation: float | jax.Array = 1.0,
) -> jax.Array:
    """Losses of every arm from the λ-dependent part of the Lagrangian, in [0, 1] (see module docstring).

    ``max_violation`` G > 1 lets an overspend count up to G budget scales (losses then lie in [½ (1 − G), 1]): the
    λ-player's integral then balances the policy's *average* cost against the budget even when the policy's cost
    jumps between far-apart values from round to round, where a violation clipped at one scale would let a policy
    that overspends by 16 scales half the time pass as balanced."""
    # jnp.maximum (not max) so that the budget may be a traced value, e.g. one compiled loop for many budgets.
    scale = relative_scale * jnp.maximum(budget, min_scale)
    g = jnp.clip((cost_estimate - (1.0 - margin) * budget) / scale, -1.0, max_violation)
    c = max(max_lambda, 1e-12)
    return 0.5 * (1.0 - (lambdas / c) * g)


def shaped_feedback(
    lambdas: jax.Array,
    reward_estimate: jax.Array,
    cost_estimate: jax.Array,
    budget: float | jax.Array,
    value_scale: float | jax.Array,
) -> jax.Array:
    """Losses of every arm from the whole Lagrangian ``R̂ − λ_k (Ĉ − B)``, in [0, 1] (see module docstring)."""
    lagrangian = reward_estimate - lambdas * (cost_estimate - budget)
    return 0.5 * (1.0 + jnp.clip(lagrangian / value_scale, -1.0, 1.0))


def ogd_lambda_step(
    lam: jax.Array, cost_estimate: jax.Array, budget: float, learning_rate: float, max_lambda: float
) -> jax.Array:
    """Algorithm 1's continuous λ-player: projected online gradient descent on the loss ``−λ (V̂_c − B)``.

    The gradient of the loss in λ is ``−(V̂_c − B)``, so the step is ``λ ← Π_[0, C](λ + η (V̂_c − B))``: λ rises
    while the iterate is estimated to overspend the budget and falls (to 0 at most) while it has slack.
    """
    return jnp.clip(lam + learning_rate * (cost_estimate - budget), 0.0, max_lambda)
