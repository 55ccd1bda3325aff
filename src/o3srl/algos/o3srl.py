"""O3SRL, practical version (Algorithm 2): EXP3 over a grid of Lagrange multipliers around an offline-RL oracle.

One round::

    p   = bandit probabilities;  k ~ p;  λ = arms[k]
    M × (batch ~ D; one oracle step on the shaped reward r − λ (c − b))       (warm-started, one shared network set)
    Ĉ   = the policy's episode cost from a learned model's rollouts (adaptive player; ``cost_estimate="model"``)
          or the mean over dataset initial states of Q_c(s, π(s))                (the critics' cost estimate)
    ℓ   = feedback(arms, Ĉ, B) ∈ [0, 1]^K;   bandit update with ℓ (EXP3 looks only at ℓ_k)

The output is the last iterate π_T (the paper's), the uniform mixture of tail iterates, or the best of them as the
cost model reads them (``--o3srl.output``, :func:`best_members`). With a single arm this is the oracle at a fixed λ
(``--algo td3bc`` / ``iql`` and the paper's "fixed λ" ablation): the same code path, so every algorithm shares the
loop, the checkpoints and the logging. A whole chunk of rounds is one compiled call: no host round-trip per round.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from o3srl import bandits
from o3srl.algos.base import OutputKind, Setting  # Setting lives in base; imported from here too
from o3srl.algos.cost_model import CostModel, CostModelConfig
from o3srl.algos.iql import IQL, IQLConfig
from o3srl.algos.td3bc import TD3BC, TD3BCConfig
from o3srl.data.sampler import DeviceData, sample_batch, sample_init_obs
from o3srl.errors import ConfigError


@dataclass(frozen=True)
class O3SRLConfig:
    """The λ-player of O3SRL and the round structure (K = 5, C = 5, M = 10 as in the paper; the bandit, its rates
    and the feedback are this project's design, chosen on the evidence in docs/algorithms/o3srl.md)."""

    player: Literal["earlier", "adaptive"] = "adaptive"
    """Which λ-player the knobs below default to (an explicit flag overrides its knob). adaptive (the default):
    lagrangian feedback against (1 − δ) B, Hedge on a box with an averaged optimistic hint, the oracle trained on the
    mean λ of the player's distribution, arms in the data's unit, Ĉ from a learned cost model, violations counted up
    to G budget scales, and as output the best safe-reading tail members mixed with bolder ones where the model's
    readings leave room; it tracks λ* on the tabular CMDPs (45/45 safe, 0.95 × LP), is safe within 1–2 % of the
    optimum on the toy task, and on Bullet its reward rises with κ (docs/algorithms/o3srl.md). earlier: the first
    design, shaped feedback, EXP3 with textbook rates, absolute arms, the twins' mean as Ĉ, the last iterate; it
    behaves as a fixed λ ≈ 2.5 whatever κ, and stays for ablations and to read runs saved before 2026-12."""
    num_arms: int = 5
    """K: number of λ values on the grid u · linspace(0, C, K)."""
    max_lambda: float = 5.0
    """C: the largest λ, in units u of --o3srl.lambda-scale."""
    lambda_scale: float | None = None
    """u: the unit of the arm grid, in the critics' units. None: 1 for the earlier player; for the adaptive one, from
    the data, (reward scale / cost scale) × (range of the episodes' reward returns / range of their cost returns),
    the rate at which the data trades reward for cost (o3srl.bandits.lambda_unit)."""
    arms: tuple[float, ...] | None = None
    """An explicit list of λ values in the critics' units (overrides K, C and the unit)."""
    steps_per_round: int = 10
    """M: oracle gradient steps per bandit round."""
    oracle_lambda: Literal["drawn", "mean"] | None = None
    """The λ the oracle's M steps use. drawn (None, earlier player): the arm the bandit drew (the paper's). mean
    (None, adaptive player): the mean λ of the distribution the bandit draws from, Σ_k p_k λ_k. The Lagrangian is
    linear in λ, so the best response to the λ-player's mixed strategy p is the best response to its mean; the draw
    then only selects which arm's loss is observed. It removes the draw's noise from the policy: with drawn arms
    the policy's cost follows the last few draws (docs/algorithms/o3srl.md, "The oracle on the mean λ")."""
    bandit: bandits.BanditKind | None = None
    """None: exp3 (the paper's, textbook rates) for the earlier player, hedgebox for the adaptive one (Hedge whose
    log-weights stay within a box of width max_gap, so that it follows losses that drift as the oracle learns
    without biasing where it settles; full information, because with the oracle on the mean λ the policy does not
    depend on the drawn arm and the feedback gives every arm's loss); also exp3box (EXP3 on the same box),
    exp3s (fixed share), exp3ix and hedge."""
    feedback: bandits.FeedbackKind | None = None
    """The pulled arm's loss (see o3srl.bandits). None: shaped (the whole Lagrangian over a fixed scale) for the
    earlier player, lagrangian (the λ-player's own loss −λ (Ĉ − (1 − δ) B) scaled by the budget) for the adaptive."""
    learning_rate: float | None = None
    """Bandit rate η; None: 0.03 for exp3box and hedgebox, 0.2 for exp3s (measured on the tabular CMDPs), EXP3's
    textbook sqrt(2 ln K / (K n)) for the run's n rounds for the other bandits."""
    exploration: float | None = None
    """The uniform mix γ of the draw (exp3, exp3box) or the share α (exp3s) or the implicit exploration (exp3ix).
    None: 0 for exp3box (its box keeps every arm drawn), 0.01 for exp3s, Auer et al.'s rate for n rounds for exp3."""
    max_gap: float = bandits.MAX_GAP
    """The box W of exp3box and hedgebox: no arm's log-weight more than this below the best one's (unused by the
    other bandits)."""
    optimism: float | None = None
    """β (None: 0 for the earlier player, 8 for the adaptive one): the draw anticipates the last round's losses of
    every arm, p ∝ exp(−η L̂ − β ℓ_last), and the bandit's loss estimate uses them as its baseline (0: off). A
    proportional term next to the weights' integral: it damps the λ-player's oscillation and removes most of the
    importance-weighting noise."""
    hint_decay: float | None = None
    """ρ (None: 0 for the earlier player, 0.95 for the adaptive one): the optimism's hint is the exponential average
    of the arms' past losses, m ← ρ m + (1 − ρ) ℓ (0: the last round's losses). Where Ĉ jumps between far-apart
    values from round to round (BallRun's policy on either side of its speed limit), the last loss is a poor
    prediction of the next one and β m kicks λ to the largest arm for a round at every spike; the average over
    ≈ 1 / (1 − ρ) rounds responds to the violation's level instead."""
    margin: float | None = None
    """δ (None: 0 for the earlier player, 0.2 for the adaptive one): the lagrangian feedback plays the game against
    the tighter budget (1 − δ) B, so that the last iterate, which ends near the boundary of the game it plays, errs
    on the safe side."""
    max_violation: float | None = None
    """G: the largest violation the lagrangian feedback counts, in budget scales (None: 1 for the earlier player's
    settings, 20 for the adaptive player). Slack is always counted up to one scale. With G = 1 a policy whose cost
    jumps between 0 and 16 budgets from round to round reads as balanced; with G ≥ the largest violation the
    λ-player balances the policy's average cost (docs/algorithms/o3srl.md, "Violation counted in full")."""
    hint_violation: float | None = None
    """G_h: the largest violation the optimism's hint counts, in budget scales (None: G, the same as the weights).
    The weights' integral needs violations counted in full (G) to balance the policy's average cost; the hint is a
    proportional term, and with G = 20 a few rounds whose Ĉ spikes (BallRun's policy crossing its speed limit) move
    β m by several units and throw λ̄ to the largest arm. With G_h = 1 the hint follows how often the policy
    overspends, not by how much; any hint computed from past losses keeps the estimate unbiased."""
    cost_estimate: Literal["mean", "max", "model"] | None = None
    """Where Ĉ comes from. model (None, adaptive player): the policy's undiscounted episode cost in rollouts of a
    dynamics-and-cost model fit to the dataset (o3srl.algos.cost_model; the section --cost-model), compared with κ
    itself; the actor is not trained against it, so it cannot exploit it as it does the cost critic. mean (None,
    earlier player) / max: the twin cost critics' mean / larger value at the feedback states, compared with B."""
    feedback_states: Literal["initial", "batch"] = "initial"
    """Where the cost critic is read: dataset episodes' initial states (V_c(s0), what the budget B bounds; the
    default) or the training batch's states (the policy's cost rate over the data's states, including states the
    policy would not visit: more pessimistic; on the toy task it left the κ = 5 policy at 3 % of its cost limit)."""
    feedback_batch: int = 256
    output: Literal["last", "tail", "best", "mix", "hull"] | None = None
    """The policy the run outputs: its last iterate (the paper's; None, earlier player); the tail mixture:
    ``tail_members`` iterates spread evenly over the last ``tail_fraction`` of the rounds (the last one included),
    one drawn per episode, so its expected episode cost is the members' average, the quantity the λ-player's
    integral balances; best: the uniform mixture of the ``best_members`` tail members with the highest episode
    reward in the cost model's rollouts among those whose model cost is at most (1 − δ) κ (:func:`best_members`;
    it needs the cost model with its reward head); or mix (None, adaptive player): those members mixed with the
    ``best_members`` highest-reward members that read above (1 − δ) κ, in the share that keeps the mixture's mean
    reading within it (:func:`mixed_members`), when that raises the model reward; or hull: the mixture of at most
    two tail members with the highest mean reward reading whose mean pessimistic cost reading is within (1 − δ) κ,
    in whole slots (:func:`hull_members`, the linear programme over the members' mixtures). Every run keeps
    the tail members and their readings whatever its output, so any output can be chosen afterwards from the same
    training."""
    best_members: int = 3
    """How many tail members the ``best`` output mixes (fewer when fewer read safe); the ``mix`` output takes as
    many above the target."""
    mix_slots: int = 20
    """The ``mix`` and ``hull`` outputs' resolution: their members fill this many slots, one drawn per episode (a
    member in j of them is followed in j of every ``mix_slots`` episodes)."""
    mix_min_share: float = 0.0
    """The smallest share of the ``mix`` output's slots its bolder members may take; a smaller one is not mixed in
    (the output is then ``best``'s)."""
    best_pessimism: float = 1.0
    """k of the ``best``, ``mix`` and ``hull`` outputs: a member reads safe when its model cost plus k times the
    spread of the model's members' readings is within (1 − δ) κ. Choosing the highest rewards among members that
    read safe favours the ones whose cost the model under-reads; on CarCircle at κ = 40 the members chosen with
    k = 0 read 27–32 and cost 33–48, and their mixture overspent in two of four tail pools, where k = 1 chose
    members that cost 22 (on BallRun at κ = 5 the choice is the same with k = 0, 1 or 2). The λ-player itself reads
    the mean (k of --cost-model.pessimism)."""
    tail_members: int | None = None
    """None: 20 for the ``tail`` and ``last`` outputs (one member per episode of the default 20-episode evaluation,
    whose stratified draws then follow each member once, o3srl.policy.MixturePolicy), 100 for ``best``, which
    chooses among them: on BallRun at κ = 5, 20 members spread over the last half missed the good stretch of one
    seed in three (310 against 364 for 100 over the same half; docs/algorithms/o3srl.md, "Output"); 100 for
    ``mix`` and ``hull`` too."""
    tail_fraction: float | None = None
    """The stretch of the run the tail members are spread over (the last rounds). None: 0.1 for the ``tail`` and
    ``last`` outputs, 0.5 for ``best``, which chooses its members by their own readings and so does not need the
    members to average out: on BallRun at κ = 5 the best of 100 iterates over the last half scored 441 and 446 at
    seeds 0 and 1, where the best of the last 10 % scored 424 and 441 (docs/algorithms/o3srl.md, "Output")."""
    min_scale: float = 1.0
    """Floor of the budget scale that normalises the lagrangian feedback (matters when κ is near 0)."""


PLAYERS: dict[str, dict[str, Any]] = {
    "earlier": {
        "bandit": "exp3",
        "feedback": "shaped",
        "optimism": 0.0,
        "margin": 0.0,
        "lambda_scale": 1.0,
        "cost_estimate": "mean",
        "max_violation": 1.0,
        "output": "last",
        "oracle_lambda": "drawn",
        "hint_decay": 0.0,
    },
    "adaptive": {
        "bandit": "hedgebox",
        "feedback": "lagrangian",
        "optimism": 8.0,
        "margin": 0.2,
        "lambda_scale": None,
        "cost_estimate": "model",
        "max_violation": 20.0,
        "output": "mix",
        "oracle_lambda": "mean",
        "hint_decay": 0.95,
    },
}
"""The knobs each λ-player sets when the config leaves them at None (lambda_scale None: the data's unit)."""


def resolve_player(config: O3SRLConfig) -> O3SRLConfig:
    """The config with every knob left at None set by its player (explicit values are kept)."""
    if config.player not in PLAYERS:
        raise ConfigError(f"unknown o3srl.player {config.player!r}; choose one of {', '.join(PLAYERS)}")
    fills = {k: v for k, v in PLAYERS[config.player].items() if getattr(config, k) is None and v is not None}
    return dataclasses.replace(config, **fills)


@dataclass(frozen=True)
class Player:
    """The λ-player's knobs as a run reads them: :class:`O3SRLConfig`'s, each one left at None set by the player
    (:data:`PLAYERS`, :func:`player_of`)."""

    bandit: bandits.BanditKind
    feedback: bandits.FeedbackKind
    optimism: float
    margin: float
    lambda_scale: float | None
    """None: the data's unit (the adaptive player)."""
    cost_estimate: Literal["mean", "max", "model"]
    max_violation: float
    output: Literal["last", "tail", "best", "mix", "hull"]
    oracle_lambda: Literal["drawn", "mean"]
    hint_decay: float
    hint_violation: float | None = None
    """None: the same as ``max_violation``."""


CHOSEN_OUTPUTS = ("best", "mix", "hull")
"""The outputs chosen after training from the tail members' model readings (:meth:`O3SRL.output_members`)."""

TAILS = {"last": (20, 0.1), "tail": (20, 0.1), "best": (100, 0.5), "mix": (100, 0.5), "hull": (100, 0.5)}
"""(members, fraction of the rounds) of the tail when ``tail_members`` / ``tail_fraction`` are None, by output."""


def tail_members_of(config: O3SRLConfig) -> int:
    """``config``'s tail members, its output's default (:data:`TAILS`) when it leaves them at None."""
    if config.tail_members is not None:
        return int(config.tail_members)
    return TAILS[player_of(config).output][0]


def tail_fraction_of(config: O3SRLConfig) -> float:
    """``config``'s tail fraction, its output's default (:data:`TAILS`) when it leaves it at None."""
    if config.tail_fraction is not None:
        return float(config.tail_fraction)
    return TAILS[player_of(config).output][1]


def player_of(config: O3SRLConfig) -> Player:
    """The knobs of ``config``'s λ-player with the player's defaults filled in."""
    resolved = resolve_player(config)
    knobs = {f.name: getattr(resolved, f.name) for f in dataclasses.fields(Player)}
    unset = [k for k, v in knobs.items() if v is None and k not in ("lambda_scale", "hint_violation")]
    if unset:
        raise ConfigError(f"o3srl.player {config.player!r} leaves {', '.join(unset)} unset; give them explicitly")
    return Player(**knobs)


class CellParams(flax.struct.PyTreeNode):
    """The numbers of one run that the round loop reads and that are data rather than code: the arms (λ values),
    the budget and the feedback's scales. Runs on one dataset whose configs differ only in what these hold (seed,
    cost limit, fixed λ) compute the same program, so they train as one vmapped program (``o3srl.train.run_pack``);
    the seed lives in the state's keys. A run alone reads them as constants of the compiled program."""

    arms: Any
    max_lambda: Any
    budget_step: Any
    budget_value: Any
    value_scale: Any
    cost_limit: Any


class LearnerState(flax.struct.PyTreeNode):
    oracle: Any
    bandit: bandits.BanditState
    key: jax.Array
    tail: Any  # actor parameters of the tail mixture's members, stacked along a leading axis (slot 0: the last round)
    model: Any  # the cost model's state (cost_estimate "model"), else None
    tail_readings: Any = None
    """(tail members, 4): each member's episode reward and cost as the cost model read them in the round it was kept
    (the cost as the λ-player read it), the spread of the cost across the model's members, and 1 where they were read
    (0: no reading, as without the reward head)."""


def _ranked_readings(readings: np.ndarray, pessimism: float) -> tuple[np.ndarray, np.ndarray]:
    """(reward reading, pessimistic cost reading: cost + ``pessimism`` spreads) per member, with a member that has
    no reading (read 0, or NaN) at −∞ reward and +∞ cost, so that it ranks last by either."""
    readings = np.asarray(readings, np.float64)
    missing = (readings[:, 3] == 0) | np.isnan(readings[:, :3]).any(axis=1)
    reward = np.where(missing, -np.inf, readings[:, 0])
    return reward, np.where(missing, np.inf, readings[:, 1] + pessimism * readings[:, 2])


def best_members(readings: np.ndarray, cost_target: float, count: int, pessimism: float = 0.0) -> np.ndarray:
    """The members the ``best`` output mixes, from their model readings (members, 4) = (episode reward, episode
    cost, the cost's spread across the model's members, read): among those whose cost reading plus ``pessimism``
    spreads is at most ``cost_target``, the ``count`` with the highest reward reading (fewer when fewer read safe;
    of equal readings the more recent, lower index, first); when none reads safe, the ``count`` with the lowest
    pessimistic cost reading. A member without a reading (read 0, or NaN) counts as the worst."""
    reward, cost = _ranked_readings(readings, pessimism)
    safe = np.flatnonzero(cost <= cost_target)
    if len(safe):
        order = safe[np.argsort(-reward[safe], kind="stable")]
    else:
        order = np.argsort(cost, kind="stable")
    return np.sort(order[: max(1, count)])


def mixed_members(
    readings: np.ndarray,
    cost_target: float,
    count: int,
    pessimism: float = 0.0,
    slots: int = 20,
    min_share: float = 0.0,
    share_pessimism: float | None = None,
) -> np.ndarray:
    """The slots the ``mix`` output draws from, one per episode (a member listed j times is followed in j of every
    ``slots`` episodes), from the members' model readings (as :func:`best_members`'s).

    L, the members :func:`best_members` chooses (each once, as the ``best`` output), are the output unless mixing
    pays: H, the ``count`` members with the highest reward reading among those whose pessimistic cost reading
    (cost + ``pessimism`` spreads) is above ``cost_target``, take the most of the ``slots`` (n; each group is spread
    over its members in turn, the best first) with which the slots' mean pessimistic cost reading stays within
    ``cost_target`` and their mean reward reading rises above L's; a share n / ``slots`` below ``min_share`` is not
    taken (L alone). A mixture of a cautious and a bolder behaviour
    is how a constrained optimum between two behaviours is reached (no single λ's best response is there); the
    pessimistic readings and the whole-slot share keep the mixture's reading on the safe side of the target. When
    no member reads safe, L (the lowest pessimistic costs) alone. ``share_pessimism`` (None: ``pessimism``) is the k
    of the cost readings the share is set with, where L and H are chosen with ``pessimism``. Returns the slot
    indices, sorted (``slots`` of them when mixed)."""
    readings = np.asarray(readings, np.float64)
    low = best_members(readings, cost_target, count, pessimism)
    missing = (readings[:, 3] == 0) | np.isnan(readings[:, :3]).any(axis=1)
    reward, cost = readings[:, 0], readings[:, 1] + pessimism * readings[:, 2]
    above = np.flatnonzero(~missing & (cost > cost_target))
    if not len(above) or cost[low].max() > cost_target:
        return low
    high = above[np.argsort(-reward[above], kind="stable")][: max(1, count)]
    ordered = low[np.argsort(-reward[low], kind="stable")]
    k_share = pessimism if share_pessimism is None else share_pessimism
    share_cost = readings[:, 1] + k_share * readings[:, 2]
    for n in range(slots - 1, max(0, int(np.ceil(min_share * slots - 1e-9)) - 1), -1):
        mixed = np.concatenate([np.resize(high, n), np.resize(ordered, slots - n)])
        if share_cost[mixed].mean() <= cost_target and reward[mixed].mean() > reward[low].mean():
            return np.sort(mixed)
    return low


def hull_members(readings: np.ndarray, cost_target: float, pessimism: float = 0.0, slots: int = 20) -> np.ndarray:
    """The slots the ``hull`` output draws from (as :func:`mixed_members`'s): the mixture of at most two members
    with the highest mean reward reading whose mean pessimistic cost reading (cost + ``pessimism`` spreads) is within
    ``cost_target``, in whole slots. With one constraint the linear programme over the members' mixtures has an
    optimum on at most two members, so this is that programme on the readings, up to the slots' resolution: the
    best member that reads within the target alone, or a pair of one within it (i) and one above it (j) with j in
    the most slots n that keep the mean within it, n = ⌊slots (target − c_i) / (c_j − c_i)⌋ ≤ slots − 1. When no
    member reads within the target, the one with the lowest pessimistic cost reading. A member without a reading is
    never chosen while another has one. Returns the slot indices, sorted."""
    reward, cost = _ranked_readings(readings, pessimism)
    safe = np.flatnonzero(cost <= cost_target)
    if not len(safe):
        return np.array([int(np.argmin(cost))])
    best_value, best = reward[safe].max(), np.array([int(safe[np.argmax(reward[safe])])])
    above = np.flatnonzero(np.isfinite(cost) & (cost > cost_target) & (reward > best_value))
    if len(above):
        ci, cj = cost[safe][:, None], cost[above][None, :]
        n = np.minimum(np.floor(slots * (cost_target - ci) / (cj - ci) + 1e-9), slots - 1)  # slots of j, per pair
        value = np.where(n >= 1, (n * reward[above][None, :] + (slots - n) * reward[safe][:, None]) / slots, -np.inf)
        i, j = np.unravel_index(int(np.argmax(value)), value.shape)  # the first of equal values: row-major order
        if value[i, j] > best_value:
            best = np.array([safe[i]] * int(slots - n[i, j]) + [above[j]] * int(n[i, j]))
    return np.sort(best)


def make_oracle(name: str, td3bc: TD3BCConfig, iql: IQLConfig, obs_dim: int, act_dim: int) -> TD3BC | IQL:
    if name == "td3bc":
        return TD3BC(td3bc, obs_dim, act_dim)
    if name == "iql":
        return IQL(iql, obs_dim, act_dim)
    raise ConfigError(f"unknown oracle {name!r}; choose 'td3bc' or 'iql'")


class O3SRL:
    """The round loop around an oracle. Pure functions of :class:`LearnerState`."""

    title = "O3SRL"

    def __init__(
        self,
        config: O3SRLConfig,
        oracle: TD3BC | IQL,
        setting: Setting,
        fixed_lambda: float | None = None,
        cost_model: CostModel | None = None,
    ):
        self.config = resolve_player(config)  # the config as the run reads it
        self.player = player = player_of(config)  # its λ-player's knobs, typed as filled in
        self.oracle = oracle
        self.setting = setting
        self.cost_model = None
        if player.cost_estimate == "model":
            self.cost_model = cost_model or CostModel(CostModelConfig(), setting.obs_dim, setting.act_dim)
            if player.feedback == "shaped":
                raise ConfigError(
                    "o3srl.cost_estimate 'model' gives an episode cost, which the shaped feedback (a "
                    "discounted Lagrangian value) cannot use; use feedback 'lagrangian' with it"
                )
        if fixed_lambda is not None:
            arms = [float(fixed_lambda)]
        elif config.arms:
            arms = [float(a) for a in config.arms]
        else:
            unit = setting.lambda_unit if player.lambda_scale is None else player.lambda_scale  # None: adaptive
            if not (math.isfinite(unit) and unit > 0):
                raise ConfigError(f"o3srl.lambda_scale must be a finite number > 0, got {unit}")
            arms = bandits.arm_grid(config.num_arms, config.max_lambda * unit)
        if any(a < 0 or not math.isfinite(a) for a in arms):
            raise ConfigError(f"λ arms must be finite and ≥ 0, got {arms}")
        if config.steps_per_round < 1:
            raise ConfigError(f"steps_per_round (M) must be ≥ 1, got {config.steps_per_round}")
        self.fixed = fixed_lambda is not None
        if not 0.0 <= player.margin < 1.0:
            raise ConfigError(f"o3srl.margin must be in [0, 1), got {player.margin}")
        if not 0.0 <= player.hint_decay < 1.0:
            raise ConfigError(f"o3srl.hint_decay must be in [0, 1), got {player.hint_decay}")
        if not (math.isfinite(player.optimism) and player.optimism >= 0):
            raise ConfigError(f"o3srl.optimism must be a finite number ≥ 0, got {player.optimism}")
        self.steps_per_round = config.steps_per_round
        self.arms = np.asarray(arms, np.float32)
        self.max_lambda = float(max(self.arms.max(), 1e-12))
        self.num_rounds = max(1, setting.total_steps // config.steps_per_round)
        k = len(arms)
        self.learning_rate, self.exploration = bandits.default_rates(
            player.bandit, k, self.num_rounds, config.learning_rate, config.exploration
        )
        self.optimism = player.optimism
        self.tail_fraction = tail_fraction_of(self.config)
        members = tail_members_of(self.config)
        if members < 1 or not 0.0 < self.tail_fraction <= 1.0 or config.best_members < 1 or config.mix_slots < 2:
            raise ConfigError(
                f"o3srl.tail_members and o3srl.best_members must be ≥ 1, o3srl.mix_slots ≥ 2 and "
                f"o3srl.tail_fraction in (0, 1], got {members}, {config.best_members}, {config.mix_slots} and "
                f"{self.tail_fraction}"
            )
        if not 0.0 <= config.mix_min_share < 1.0:
            raise ConfigError(f"o3srl.mix_min_share must be in [0, 1), got {config.mix_min_share}")
        no_reading = self.cost_model is None or self.cost_model.reward_net is None
        if player.output in CHOSEN_OUTPUTS and not self.fixed and no_reading:
            raise ConfigError(
                f"o3srl.output {player.output!r} reads the tail members' reward and cost with the "
                "cost model: it needs o3srl.cost_estimate 'model' and cost_model.reward_head true; otherwise "
                "choose o3srl.output 'tail' or 'last'"
            )
        tail_rounds = max(1, round(self.num_rounds * self.tail_fraction))
        self.tail_stride = max(1, tail_rounds // members)
        self.tail_members = min(members, (self.num_rounds - 1) // self.tail_stride + 1)
        gamma = oracle.config.gamma
        cost_scale = oracle.config.cost_scale
        # Everything the feedback compares lives in the critics' units (scaled cost, discounted value).
        self.budget = setting.budget(oracle.config)
        self.value_scale = (
            oracle.config.reward_scale * setting.reward_abs_max + self.max_lambda * cost_scale * setting.cost_abs_max
        ) / (1.0 - gamma)

    @property
    def budget_step(self) -> float:
        """b, the per-step budget (the data's units)."""
        return self.budget.per_step

    @property
    def budget_value(self) -> float:
        """B, the budget on the discounted cost value (the critics' units)."""
        return self.budget.value

    def cell_params(self) -> CellParams:
        """This run's :class:`CellParams` as float32 arrays, to be stacked with other runs' for a packed program."""
        return CellParams(
            arms=jnp.asarray(self.arms, jnp.float32),
            max_lambda=jnp.float32(self.max_lambda),
            budget_step=jnp.float32(self.budget_step),
            budget_value=jnp.float32(self.budget_value),
            value_scale=jnp.float32(self.value_scale),
            cost_limit=jnp.float32(self.setting.cost_limit),
        )

    def cell_constants(self) -> CellParams:
        """This run's :class:`CellParams` as Python numbers: compiled in as constants (a run trained alone)."""
        return CellParams(
            arms=self.arms,
            max_lambda=self.max_lambda,
            budget_step=self.budget_step,
            budget_value=self.budget_value,
            value_scale=self.value_scale,
            cost_limit=self.setting.cost_limit,
        )

    # ------------------------------------------------------------------ state
    def init(self, key: jax.Array) -> LearnerState:
        k_oracle, k_run = jax.random.split(key)
        oracle = self.oracle.init(k_oracle)
        tail = jax.tree.map(lambda x: jnp.zeros((self.tail_members, *x.shape), x.dtype), oracle.actor)
        # The model's key is folded out of the run's key, so runs without a model draw exactly what they did before.
        model = None if self.cost_model is None else self.cost_model.init(jax.random.fold_in(key, 1))
        return LearnerState(
            oracle=oracle,
            bandit=bandits.init_bandit(len(self.arms)),
            key=k_run,
            tail=tail,
            model=model,
            tail_readings=jnp.zeros((self.tail_members, 4), jnp.float32),
        )

    def prepare(self, state: LearnerState, data: DeviceData) -> LearnerState:
        """Before the first round: fit the cost model to the dataset (it does not depend on the policy, so once is
        enough; the fitted model is part of the state, so a resumed run reads the same one)."""
        if self.cost_model is None:
            return state
        key = jax.random.fold_in(jax.random.fold_in(state.key, 2), 0)
        return state.replace(model=self.cost_model.fit(state.model, data, key))

    def _tail_slot(self, rounds_done: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(whether the iterate after ``rounds_done`` rounds is a tail member, its slot): slot j holds the iterate of
        round n − j · stride (n rounds in all, so slot 0 is the last iterate)."""
        left = self.num_rounds - rounds_done
        slot = left // self.tail_stride
        keep = (left >= 0) & (left % self.tail_stride == 0) & (slot < self.tail_members)
        return keep, jnp.clip(slot, 0, self.tail_members - 1)

    def _keep_tail(self, tail: Any, actor: Any, rounds_done: jax.Array) -> Any:
        """Store ``actor`` (any pytree: a member's parameters or readings) in its tail slot when the iterate after
        ``rounds_done`` rounds is one of the tail's (:meth:`_tail_slot`)."""
        keep, slot = self._tail_slot(rounds_done)
        return jax.lax.cond(
            keep, lambda t: jax.tree.map(lambda stack, leaf: stack.at[slot].set(leaf), t, actor), lambda t: t, tail
        )

    @staticmethod
    def upgrade_state_dict(state_dict: dict[str, Any], template: LearnerState) -> dict[str, Any]:
        """A checkpoint written before the adaptive λ-player (no bandit hint, no tail members) in today's layout: the
        hint is zero (as the optimism-free bandit it ran had), the tail is empty (the run outputs its last iterate)."""
        from flax import serialization

        fresh = serialization.to_state_dict(template)
        state_dict = dict(state_dict)
        if "tail" not in state_dict:
            state_dict["tail"] = fresh["tail"]
        if "model" not in state_dict:
            state_dict["model"] = fresh.get("model")
        elif isinstance(state_dict["model"], dict) and isinstance(fresh.get("model"), dict):
            # A cost model saved before its reward head: the fields it did not have (its config has no head).
            state_dict["model"] = {**fresh["model"], **state_dict["model"]}
        if "tail_readings" not in state_dict:
            state_dict["tail_readings"] = fresh["tail_readings"]  # no readings: the best output cannot be chosen
        elif np.shape(state_dict["tail_readings"])[-1] == 3:
            # Readings kept before the spread column (reward, cost, read): the spread counts as 0.
            old = np.asarray(state_dict["tail_readings"], np.float32)
            state_dict["tail_readings"] = np.concatenate([old[:, :2], np.zeros_like(old[:, :1]), old[:, 2:]], axis=1)
        bandit = dict(state_dict.get("bandit", {}))
        if "hint" not in bandit and "log_weights" in bandit:
            bandit["hint"] = fresh["bandit"]["hint"]
            state_dict["bandit"] = bandit
        return state_dict

    def act(self, actor_params: Any, obs: jax.Array) -> jax.Array:
        return self.oracle.act(actor_params, obs)

    # ------------------------------------------------------------------ what the training loop records
    def output(self, state: LearnerState) -> tuple[Any, OutputKind]:
        """The last iterate (``single``); the tail members (``mixture``) with ``o3srl.output tail``; the members
        :meth:`output_members` chooses (``mixture``, a member listed twice is drawn twice as often) with ``best``,
        ``mix`` and ``hull``. An oracle at a fixed λ (``--algo td3bc`` / ``iql``) always outputs its last iterate."""
        if self.fixed or self.player.output == "last":
            return state.oracle.actor, "single"
        if self.player.output == "tail":
            return state.tail, "mixture"
        chosen = jnp.asarray(self.output_members(state))
        return jax.tree.map(lambda x: x[chosen], state.tail), "mixture"

    def output_members(self, state: LearnerState) -> np.ndarray:
        """The tail slots the ``best``, ``mix`` or ``hull`` output draws from (:func:`best_members`,
        :func:`mixed_members`, :func:`hull_members` against (1 − δ) κ)."""
        target = (1.0 - self.player.margin) * self.setting.cost_limit
        cfg, readings = self.config, np.asarray(state.tail_readings)
        if self.player.output == "mix":
            return mixed_members(
                readings, target, cfg.best_members, cfg.best_pessimism, cfg.mix_slots, cfg.mix_min_share
            )
        if self.player.output == "hull":
            return hull_members(readings, target, cfg.best_pessimism, cfg.mix_slots)
        return best_members(readings, target, cfg.best_members, cfg.best_pessimism)

    def output_info(self, state: LearnerState) -> dict[str, Any]:
        """What the run's summary records about its output: the tail members' model readings and, for ``best``,
        the slots chosen (slot 0 is the last iterate)."""
        if self.fixed or self.player.output == "last":
            return {}
        readings = np.asarray(state.tail_readings, np.float64)
        info: dict[str, Any] = {
            "tail_model_readings": [
                [round(float(r), 4), round(float(c), 4), round(float(sd), 4)] if read else None
                for r, c, sd, read in readings
            ]
        }
        if self.player.output in CHOSEN_OUTPUTS:
            info["output_members"] = self.output_members(state).tolist()
        return info

    def run_info(self) -> dict[str, Any]:
        info = {
            "budget_per_step": self.budget.per_step,
            "budget_value": self.budget.reported_value,
            "arms": self.arms.tolist(),
            "bandit_learning_rate": self.learning_rate,
            "bandit_exploration": self.exploration,
        }
        if self.cost_model is not None:
            info["cost_model_head"] = self.cost_model.head
        return info

    def bandit_arms(self) -> list[float] | None:
        """The arms, for the bandit plot; ``None`` for an oracle at a fixed λ (no bandit to plot)."""
        return None if self.fixed else self.arms.tolist()

    # ------------------------------------------------------------------ one round
    def _round(
        self, state: LearnerState, data: DeviceData, cell: CellParams | None = None
    ) -> tuple[LearnerState, dict[str, jax.Array]]:
        cfg, player = self.config, self.player
        c = self.cell_constants() if cell is None else cell
        key, k_arm, k_steps, k_fb = jax.random.split(state.key, 4)
        arms = jnp.asarray(c.arms)
        probs = bandits.arm_probabilities(state.bandit, player.bandit, self.exploration, self.optimism)
        arm = bandits.draw_arm(k_arm, probs)
        lam = bandits.played_lambda(arms, probs, arm, player.oracle_lambda)

        def oracle_step(oracle_state: Any, step_key: jax.Array) -> tuple[Any, dict[str, jax.Array]]:
            k_batch, k_update = jax.random.split(step_key)
            batch = sample_batch(k_batch, data, self.oracle.config.batch_size)
            return self.oracle.update(oracle_state, batch, lam, c.budget_step, k_update)

        oracle_state, step_metrics = jax.lax.scan(
            oracle_step, state.oracle, jax.random.split(k_steps, cfg.steps_per_round)
        )
        in_tail, _ = self._tail_slot(state.bandit.rounds + 1)
        if self.cost_model is not None:
            # The same initial states every round (what the optimism's hint needs: Ĉ moves only as the policy does).
            init_obs = sample_init_obs(jax.random.PRNGKey(0), data, self.cost_model.config.rollout_states)
            model = self.cost_model.refresh(
                state.model,
                lambda s: self.oracle.act(oracle_state.actor, s),
                init_obs,
                self.setting.episode_length,
                state.bandit.rounds,
                read_reward=in_tail,  # a tail member's reward and cost are read by fresh rollouts
            )
            fb_obs = init_obs
        elif cfg.feedback_states == "initial":
            model = state.model
            # With optimism, the same initial states every round: Ĉ then changes only as the policy and critics do,
            # so the loss hint (last round's losses) predicts the next losses closely and the estimate stays quiet.
            # Without it (the earlier player), fresh states every round, as before.
            fb_key = jax.random.PRNGKey(0) if self.optimism > 0 else k_fb
            fb_obs = sample_init_obs(fb_key, data, cfg.feedback_batch)
        else:
            model = state.model
            fb_obs = sample_batch(k_fb, data, cfg.feedback_batch).obs
        critic_reduce = "mean" if player.cost_estimate == "model" else player.cost_estimate
        q_r, q_c = self.oracle.policy_values(oracle_state, fb_obs, critic_reduce)
        reward_estimate = q_r.mean()
        if self.cost_model is not None:
            # An episode's cost against κ itself, in the cost limit's units.
            k = self.cost_model.config.pessimism
            cost_estimate = model.estimate + k * model.spread if k else model.estimate
            budget, unit = c.cost_limit, 1.0
        else:
            cost_estimate, budget, unit = q_c.mean(), c.budget_value, self.oracle.config.cost_scale

        def lagrangian(max_violation: float) -> jax.Array:
            return bandits.lagrangian_feedback(
                arms, c.max_lambda, cost_estimate, budget, cfg.min_scale, player.margin, max_violation=max_violation
            )

        hint_losses = None
        if player.feedback == "lagrangian":
            losses = lagrangian(player.max_violation)
            if player.hint_violation not in (None, player.max_violation):
                hint_losses = lagrangian(player.hint_violation)  # the hint's own cap G_h
        else:
            losses = bandits.shaped_feedback(arms, reward_estimate, cost_estimate, c.budget_value, c.value_scale)
        bandit_state = bandits.update_bandit(
            state.bandit,
            player.bandit,
            arm,
            losses,
            probs,
            self.learning_rate,
            self.exploration,
            self.optimism,
            hint_losses=hint_losses,
            max_gap=cfg.max_gap,
            hint_decay=player.hint_decay,
        )
        metrics = {k: jnp.nanmean(v) for k, v in step_metrics.items()}
        metrics.update(
            {
                "bandit/lambda": lam,
                "bandit/arm": arm.astype(jnp.float32),
                "bandit/loss": losses[arm],
                "feedback/cost_estimate": cost_estimate / unit,
                "feedback/reward_estimate": reward_estimate / self.oracle.config.reward_scale,
                "feedback/budget": jnp.asarray(budget / unit, jnp.float32),
            }
        )
        if self.cost_model is not None:
            metrics["feedback/cost_estimate_spread"] = model.spread
            metrics["feedback/critic_cost_estimate"] = q_c.mean() / self.oracle.config.cost_scale
            metrics["model/fit_loss"] = state.model.fit_loss
        for k in range(len(self.arms)):
            metrics[f"bandit/p/{k}"] = probs[k]
        tail = self._keep_tail(state.tail, oracle_state.actor, bandit_state.rounds)
        if self.cost_model is not None and model.reward_estimate is not None:
            readings = jnp.stack([model.reward_estimate, cost_estimate, model.spread, 1.0]).astype(jnp.float32)
        else:
            readings = jnp.zeros(4, jnp.float32)
        tail_readings = self._keep_tail(state.tail_readings, readings, bandit_state.rounds)
        return (
            LearnerState(
                oracle=oracle_state, bandit=bandit_state, key=key, tail=tail, model=model, tail_readings=tail_readings
            ),
            metrics,
        )

    def run_rounds(
        self, state: LearnerState, data: DeviceData, num_rounds: int, cell: CellParams | None = None
    ) -> tuple[LearnerState, dict[str, jax.Array]]:
        """``num_rounds`` rounds in one scan; metrics are stacked per round (shape (num_rounds,)). ``cell``: this
        run's numbers as data (a packed program); ``None``: this learner's own, compiled in as constants."""

        def body(s: LearnerState, _: None) -> tuple[LearnerState, dict[str, jax.Array]]:
            return self._round(s, data, cell)

        return jax.lax.scan(body, state, None, length=num_rounds)
