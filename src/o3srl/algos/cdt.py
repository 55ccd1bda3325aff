"""CDT: the Constrained Decision Transformer (Liu, Guo, Yao, Cen, Yu, Zhang & Zhao, ICML 2023), a baseline of offline
safe RL.

CDT reads offline RL as sequence modelling: a causal transformer is trained to predict the action the data took
from the episode so far and from what is still to come, the reward-to-go and the cost-to-go; at evaluation it is
asked for the reward it should still earn and the cost it may still spend. As OSRL runs it
(``osrl/algorithms/cdt.py``, ``osrl/common/dataset.py``' ``SequenceDataset``, defaults from
``examples/configs/cdt_configs.py``):

    to go          R̂_t = Σ_{t' ≥ t} r_t',   Ĉ_t = Σ_{t' ≥ t} c_t'      (undiscounted, within the episode)
    tokens         (R̂_t, Ĉ_t, s_t, a_t) for t = t0 … t0 + K − 1, each embedded by its own linear map plus the
                   embedding of its timestep t; R̂ enters as reward_scale · R̂, Ĉ as 50 − cost_scale · Ĉ
    model          LayerNorm → dropout → L pre-LayerNorm blocks (causal multi-head self-attention over the 4K
                   tokens, padded steps masked out; an MLP of width 4d with GELU) → LayerNorm
    action head    from the output at the state token s_t: a Gaussian N(μ, σ²) (OSRL's default; the evaluated
                   action is clip(μ, −1, 1)), or, with ``stochastic = False``, a deterministic tanh(μ)
    cost head      from the output at the action token a_t: log-softmax over "c_t = 0" and "c_t > 0"
    loss           −E[log N(a_t; μ, σ²)] − α E[H(N(μ, σ²))] + w_c E[NLL of the cost class]   (stochastic)
                   E ‖tanh(μ) − a_t‖² + w_c E[NLL of the cost class]                         (deterministic)
    temperature    α = exp(log α), one Adam step on log α against α (H − H̄) with H̄ = −dim(a) (SAC's)
    optimiser      AdamW (β = (0.9, 0.999), weight decay 1e-4) with a linear warm-up of the learning rate over
                   500 steps and the gradients clipped to global norm 0.25

Training windows are K steps of one trajectory from a start drawn uniformly in the episode; a window that runs past
the episode's end is padded with zeros and masked (OSRL's ``SequenceDataset``). Trajectories are drawn with
probability ∝ max(70 − C(τ), 0) (OSRL's ``cost_sample`` with its linear ``70 − x``), over the data's episodes and
the *augmented* ones: OSRL's return relabelling, which adds 20% as many trajectories whose targets lie above the
data's Pareto frontier of (cost, reward). The episodes are thinned on a 10 × 50 grid of (cost, reward) (at most 10
per cell; cells of two or fewer dropped), the frontier of the rest is fitted by a polynomial of degree ``deg`` in the
cost, and each new target (C', R') takes C' evenly spread over the data's costs and R' uniform between
frontier(C') + min_reward and max_reward; it relabels the nearest episode with cost ≤ C' (or, when that episode is
already taken, one drawn ∝ 1 / (distance + β) among those no costlier and at most ``max_rew_decrease`` less
rewarding), by shifting its R̂ and Ĉ so that they start at R' and C'.

At evaluation an episode starts from the targets (R̂_0, Ĉ_0) = (the task's target reward, κ) and subtracts every
reward and cost it receives; the model sees the last K steps (:class:`o3srl.policy.SequencePolicy`). The target
reward is OSRL's for the task (``OSRL_TASKS``: its pairs (reward, cost), interpolated linearly in the cost at κ and
held at the end pairs beyond them), ``target_return`` when it is given, and otherwise the dataset's safe frontier
R*_data(κ) (the best episode reward among episodes with cost ≤ κ; the lowest-cost episode's reward when none is).

OSRL's defaults for the Bullet tasks: d = 128, L = 3 layers, 8 heads, K = 10, dropout 0.1 (attention, residual,
embedding), learning rate 1e-4, batch 2048, reward × 0.1, cost × 1, w_c = 0.02, initial α = 0.1, 100k steps; per
task the frontier's degree, ``max_reward``, ``max_rew_decrease`` and the targets (``OSRL_TASKS``).

Where this differs from OSRL's code, on purpose (docs/algorithms/cdt.md):
- The timestep embedding has ``max_episode_len`` + K rows (1,000 + K by default) instead of the task's episode
  length + K, so that a saved policy's shapes follow from its config alone; the rows past the episode are never read.
- Observations are normalised as for every algorithm here (OSRL's CDT feeds raw states).
- Each augmented target keeps its own relabelled trajectory. OSRL zips the targets, in order, with the list of
  trajectory indices it builds by grouping repeats, which pairs a target with another target's trajectory wherever
  the nearest trajectories of successive targets are not contiguous runs.
- The frontier's polynomial degree is capped at the number of distinct frontier costs less one (OSRL fits the given
  degree and numpy warns that the fit is poorly conditioned). A cost grid of zero width is one cell.
- The cost class is c_t > 0 (OSRL's ``costs.long()`` truncates; the two agree on the Bullet tasks' 0/1 costs).
- When no trajectory has cost below 70, trajectories are drawn uniformly (OSRL's probabilities would be 0 / 0).
- The deterministic head (``stochastic = False``) is tanh(μ) (OSRL's is a linear layer clipped at evaluation).
- Every kernel, attention's included, starts from N(0, 0.02²) (PyTorch's attention initialises its input projection
  with Xavier's uniform instead); LayerNorm's ε is PyTorch's 1e-5.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from o3srl.algos.base import Metrics, OutputKind, Setting, StepLearner
from o3srl.errors import ConfigError


@dataclass(frozen=True)
class OSRLTask:
    """OSRL's per-task CDT settings (``examples/configs/cdt_configs.py``)."""

    deg: int
    max_reward: float
    max_rew_decrease: float
    targets: tuple[tuple[float, float], ...]
    """The (reward return, cost return) pairs OSRL evaluates."""


OSRL_TASKS: dict[str, OSRLTask] = {
    "OfflineAntCircle-v0": OSRLTask(2, 500.0, 100.0, ((300.0, 10.0), (350.0, 20.0), (400.0, 40.0))),
    "OfflineAntRun-v0": OSRLTask(3, 1000.0, 150.0, ((700.0, 10.0), (750.0, 20.0), (800.0, 40.0))),
    "OfflineBallCircle-v0": OSRLTask(2, 1000.0, 200.0, ((700.0, 10.0), (750.0, 20.0), (800.0, 40.0))),
    "OfflineBallRun-v0": OSRLTask(2, 1400.0, 200.0, ((500.0, 10.0), (500.0, 20.0), (700.0, 40.0))),
    "OfflineCarCircle-v0": OSRLTask(4, 600.0, 100.0, ((450.0, 10.0), (500.0, 20.0), (550.0, 50.0))),
    "OfflineCarRun-v0": OSRLTask(0, 600.0, 100.0, ((575.0, 10.0), (575.0, 20.0), (575.0, 40.0))),
    "OfflineDroneCircle-v0": OSRLTask(1, 1000.0, 100.0, ((700.0, 10.0), (750.0, 20.0), (800.0, 40.0))),
    "OfflineDroneRun-v0": OSRLTask(1, 700.0, 100.0, ((400.0, 10.0), (500.0, 20.0), (600.0, 40.0))),
    "OfflineAntVelocityGymnasium-v1": OSRLTask(1, 3000.0, 500.0, ((2800.0, 20.0), (2800.0, 40.0), (2800.0, 80.0))),
    "OfflineHalfCheetahVelocityGymnasium-v1": OSRLTask(
        1, 3000.0, 500.0, ((3000.0, 20.0), (3000.0, 40.0), (3000.0, 80.0))
    ),
    "OfflineHopperVelocityGymnasium-v1": OSRLTask(1, 2000.0, 300.0, ((1750.0, 20.0), (1750.0, 40.0), (1750.0, 80.0))),
    "OfflineSwimmerVelocityGymnasium-v1": OSRLTask(1, 250.0, 50.0, ((160.0, 20.0), (160.0, 40.0), (160.0, 80.0))),
    "OfflineWalker2dVelocityGymnasium-v1": OSRLTask(1, 3600.0, 800.0, ((2800.0, 20.0), (2800.0, 40.0), (2800.0, 80.0))),
}
"""OSRL's CDT settings for the tasks of the registry, by task id."""

FALLBACK_DEG = 2
"""The frontier's degree for a task OSRL has no setting for (the most common of its Bullet tasks' degrees)."""


@dataclass(frozen=True)
class CDTConfig:
    """CDT hyperparameters (OSRL's CDT defaults for the Bullet tasks; the per-task ones come from ``OSRL_TASKS``)."""

    embedding_dim: int = 128
    num_layers: int = 3
    num_heads: int = 8
    seq_len: int = 10
    """K: the steps of context (four tokens each: reward-to-go, cost-to-go, state, action)."""
    max_episode_len: int = 1_000
    """The longest episode the timestep embedding covers (it has max_episode_len + K rows)."""
    attention_dropout: float = 0.1
    residual_dropout: float = 0.1
    embedding_dropout: float = 0.1
    stochastic: bool = True
    """A Gaussian action head trained by likelihood with an entropy bonus (OSRL's default; the mean is evaluated);
    false: a deterministic tanh head trained by squared error."""
    init_temperature: float = 0.1
    """The entropy bonus's initial weight α (stochastic head)."""
    temperature_lr: float = 1e-4
    learning_rate: float = 1e-4
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad: float = 0.25
    """The gradients' largest global norm."""
    warmup_steps: int = 500
    """Steps of the learning rate's linear warm-up."""
    batch_size: int = 2048
    reward_scale: float = 0.1
    """The reward-to-go's factor at the model's input (and of the targets)."""
    cost_scale: float = 1.0
    cost_offset: float = 50.0
    """The cost-to-go enters as cost_offset − cost_scale · Ĉ (OSRL's cost_transform)."""
    loss_cost_weight: float = 0.02
    """w_c: the weight of the cost-class prediction loss."""
    augment_percent: float = 0.2
    """Augmented trajectories, as a fraction of the episodes kept by the grid filter (0: no augmentation)."""
    deg: int | None = None
    """Degree of the Pareto frontier's polynomial (default: the task's in OSRL_TASKS, else 2)."""
    max_reward: float | None = None
    """Augmented reward targets' upper end (default: the task's in OSRL_TASKS, else the data's best episode reward
    plus a tenth of its range of episode rewards)."""
    min_reward: float = 1.0
    """Augmented reward targets lie at least this far above the frontier."""
    max_rew_decrease: float | None = None
    """How much less reward a trajectory relabelled in place of a repeated nearest one may have (default: the task's
    in OSRL_TASKS, else a fifth of the data's range of episode rewards)."""
    beta: float = 1.0
    """Repeated targets draw their trajectory ∝ 1 / (distance + beta)."""
    cost_sample: bool = True
    """Draw trajectories ∝ max(cost_sample_offset − C(τ), 0) (OSRL's); false: uniformly."""
    cost_sample_offset: float = 70.0
    target_return: float | None = None
    """The target reward return R̂_0 of evaluated episodes (default: OSRL's for the task at κ, else R*_data(κ))."""


# ---------------------------------------------------------------------- data: returns-to-go, augmentation


def returns_to_go(values: np.ndarray, start: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Σ_{t' ≥ t} values_t' within each episode (episodes given by their first index and length), per step."""
    values = np.asarray(values, np.float64)
    out = np.zeros_like(values)
    for s, n in zip(start, length):
        out[s : s + n] = np.cumsum(values[s : s + n][::-1])[::-1]
    return out


def grid_filter(
    cost: np.ndarray,
    reward: np.ndarray,
    rng: np.random.Generator,
    bins: tuple[int, int] = (10, 50),
    max_per_bin: int = 10,
    min_per_bin: int = 2,
) -> np.ndarray:
    """Indices kept by OSRL's outlier filter: episodes binned on a grid over their (cost, reward) range, at most
    ``max_per_bin`` drawn from a cell, cells with ``min_per_bin`` or fewer dropped; sorted."""

    def cell(x: np.ndarray, n: int) -> np.ndarray:
        width = (x.max() - x.min()) / n
        return np.zeros(x.shape, np.int64) if width == 0 else np.floor((x - x.min()) / width).astype(np.int64)

    keys = cell(cost, bins[0]) * (bins[1] + 1) + cell(reward, bins[1])
    kept: list[np.ndarray] = []
    for key in np.unique(keys):
        members = np.flatnonzero(keys == key)
        if len(members) <= min_per_bin:
            continue
        kept.append(rng.choice(members, max_per_bin, replace=False) if len(members) > max_per_bin else members)
    return np.sort(np.concatenate(kept)) if kept else np.zeros(0, np.int64)


def pareto_front(cost: np.ndarray, reward: np.ndarray) -> np.ndarray:
    """Indices of the points no other point dominates (no more costly and no less rewarding, one strictly)."""
    keep = []
    best = -math.inf  # the best reward among strictly cheaper points
    for c in np.unique(cost):
        group = np.flatnonzero(cost == c)
        top = reward[group].max()
        if top > best:
            keep.extend(group[reward[group] == top].tolist())
            best = top
    return np.sort(np.asarray(keep, np.int64))


class Augmentation(NamedTuple):
    """OSRL's relabelled trajectories: each the episode ``source`` with its returns-to-go shifted to start at
    (``reward``, ``cost``)."""

    source: np.ndarray
    reward: np.ndarray
    cost: np.ndarray


def augment(
    reward: np.ndarray,
    cost: np.ndarray,
    rng: np.random.Generator,
    *,
    percent: float,
    deg: int,
    max_reward: float,
    min_reward: float,
    max_rew_decrease: float,
    beta: float,
) -> Augmentation:
    """OSRL's ``augmentation``: new targets above the Pareto frontier of the episodes' (cost, reward), each assigned
    a nearby episode to relabel (module docstring)."""
    empty = Augmentation(np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
    kept = grid_filter(cost, reward, rng)
    count = int(percent * len(kept))
    if count == 0:
        return empty
    c, r = cost[kept].astype(np.float64), reward[kept].astype(np.float64)
    front = pareto_front(c, r)
    degree = min(deg, len(np.unique(c[front])) - 1)
    frontier = np.poly1d(np.polyfit(c[front], r[front], deg=degree))
    target_cost = np.linspace(c.min(), c.max(), count)
    # numpy's legacy uniform(low, high), as OSRL draws it: low + (high − low) U, also when high < low
    low = frontier(target_cost) + min_reward
    target_reward = low + (max_reward - low) * rng.random(count)
    nearest = np.empty(count, np.int64)
    for i in range(count):
        cheaper = np.flatnonzero(c <= target_cost[i])
        nearest[i] = cheaper[np.argmin(np.hypot(c[cheaper] - target_cost[i], r[cheaper] - target_reward[i]))]
    source = nearest.copy()
    for j in np.unique(nearest):
        repeats = np.flatnonzero(nearest == j)[1:]  # the first target keeps its nearest episode
        if len(repeats) == 0:
            continue
        near = np.flatnonzero((c <= c[j]) & (r >= r[j] - max_rew_decrease))
        weight = 1.0 / (np.hypot(c[near] - c[j], r[near] - r[j]) + beta)
        source[repeats] = rng.choice(near, len(repeats), p=weight / weight.sum())
    return Augmentation(kept[source], target_reward, target_cost)


class SequenceTable(NamedTuple):
    """The trajectories windows are drawn from (the episodes, then the augmented ones), on the device."""

    start: jax.Array
    """Index of the first transition of each trajectory's episode."""
    length: jax.Array
    reward_shift: jax.Array
    """Added to the episode's reward-to-go (0 for an episode of the data)."""
    cost_shift: jax.Array
    prob: jax.Array
    """The probability a window is drawn from the trajectory."""
    reward_to_go: jax.Array
    """Per transition of the dataset."""
    cost_to_go: jax.Array


def sequence_table(
    rewards: np.ndarray,
    costs: np.ndarray,
    start: np.ndarray,
    length: np.ndarray,
    aug: Augmentation,
    cost_sample_offset: float | None,
) -> SequenceTable:
    """The data's episodes and the augmented trajectories, with their draw probabilities: ∝ max(offset − C(τ), 0)
    (C(τ) the trajectory's cost return, an augmented one's its target), uniform when ``cost_sample_offset`` is
    ``None`` or no trajectory has a positive weight."""
    rtg, ctg = returns_to_go(rewards, start, length), returns_to_go(costs, start, length)
    src = np.concatenate([np.arange(len(start)), aug.source])
    r_shift = np.concatenate([np.zeros(len(start)), aug.reward - rtg[start[aug.source]]])
    c_shift = np.concatenate([np.zeros(len(start)), aug.cost - ctg[start[aug.source]]])
    weight = np.ones(len(src))
    if cost_sample_offset is not None:
        w = np.maximum(cost_sample_offset - (ctg[start[src]] + c_shift), 0.0)
        weight = w if w.sum() > 0 else weight
    return SequenceTable(
        start=jnp.asarray(start[src], jnp.int32),
        length=jnp.asarray(length[src], jnp.int32),
        reward_shift=jnp.asarray(r_shift, jnp.float32),
        cost_shift=jnp.asarray(c_shift, jnp.float32),
        prob=jnp.asarray(weight / weight.sum(), jnp.float32),
        reward_to_go=jnp.asarray(rtg, jnp.float32),
        cost_to_go=jnp.asarray(ctg, jnp.float32),
    )


class SequenceBatch(NamedTuple):
    obs: jax.Array  # (B, K, obs_dim), normalised
    actions: jax.Array  # (B, K, act_dim) in [−1, 1]
    reward_to_go: jax.Array  # (B, K), the data's units
    cost_to_go: jax.Array  # (B, K)
    costs: jax.Array  # (B, K): c_t, the cost head's target
    timesteps: jax.Array  # (B, K) int
    mask: jax.Array  # (B, K) float: 1 on the trajectory's steps, 0 on the padding past its end


def sample_sequences(key: jax.Array, data: Any, table: SequenceTable, seq_len: int, batch_size: int) -> SequenceBatch:
    """Windows of ``seq_len`` steps: a trajectory drawn by ``table.prob``, a start uniform in its episode, zeros
    (masked) past the episode's end; timesteps count on through the padding (OSRL's)."""
    k_traj, k_start = jax.random.split(key)
    traj = jax.random.choice(k_traj, table.prob.shape[0], (batch_size,), p=table.prob)
    length = table.length[traj]
    start = jax.random.randint(k_start, (batch_size,), 0, length)
    pos = start[:, None] + jnp.arange(seq_len)[None, :]
    mask = pos < length[:, None]
    idx = jnp.minimum(table.start[traj][:, None] + pos, data.obs.shape[0] - 1)

    def masked(x: jax.Array) -> jax.Array:
        return jnp.where(mask.reshape(mask.shape + (1,) * (x.ndim - 2)), x, 0.0)

    return SequenceBatch(
        obs=masked(data.obs[idx]),
        actions=masked(data.actions[idx]),
        reward_to_go=masked(table.reward_to_go[idx] + table.reward_shift[traj][:, None]),
        cost_to_go=masked(table.cost_to_go[idx] + table.cost_shift[traj][:, None]),
        costs=masked(data.costs[idx]),
        timesteps=pos.astype(jnp.int32),
        mask=mask.astype(jnp.float32),
    )


# ---------------------------------------------------------------------- the model

_INIT = nn.initializers.normal(0.02)


class Block(nn.Module):
    """A pre-LayerNorm transformer block: x + drop(attention(LN(x))), then x + MLP(LN(x)) (OSRL's)."""

    embedding_dim: int
    num_heads: int
    attention_dropout: float
    residual_dropout: float

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, deterministic: bool) -> jax.Array:
        h = nn.LayerNorm(epsilon=1e-5)(x)
        h = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, dropout_rate=self.attention_dropout, kernel_init=_INIT
        )(h, h, mask=mask, deterministic=deterministic)
        x = x + nn.Dropout(self.residual_dropout)(h, deterministic=deterministic)
        h = nn.Dense(4 * self.embedding_dim, kernel_init=_INIT)(nn.LayerNorm(epsilon=1e-5)(x))
        h = nn.Dense(self.embedding_dim, kernel_init=_INIT)(nn.gelu(h, approximate=False))
        return x + nn.Dropout(self.residual_dropout)(h, deterministic=deterministic)


class CDTModel(nn.Module):
    """The transformer over (R̂, Ĉ, s, a) tokens: returns (μ, log σ, log p(cost class)) per step."""

    act_dim: int
    timesteps: int
    embedding_dim: int
    num_layers: int
    num_heads: int
    attention_dropout: float
    residual_dropout: float
    embedding_dropout: float
    stochastic: bool

    @nn.compact
    def __call__(
        self,
        obs: jax.Array,
        actions: jax.Array,
        reward_in: jax.Array,
        cost_in: jax.Array,
        timesteps: jax.Array,
        mask: jax.Array,
        deterministic: bool = True,
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        b, k = obs.shape[:2]
        d = self.embedding_dim
        time = nn.Embed(self.timesteps, d, embedding_init=_INIT)(jnp.clip(timesteps, 0, self.timesteps - 1))
        tokens = [
            nn.Dense(d, kernel_init=_INIT, name="reward_emb")(reward_in[..., None]),
            nn.Dense(d, kernel_init=_INIT, name="cost_emb")(cost_in[..., None]),
            nn.Dense(d, kernel_init=_INIT, name="state_emb")(obs),
            nn.Dense(d, kernel_init=_INIT, name="action_emb")(actions),
        ]
        x = jnp.stack([t + time for t in tokens], axis=2).reshape(b, 4 * k, d)  # R̂_0, Ĉ_0, s_0, a_0, R̂_1, ...
        valid = jnp.repeat(mask > 0, 4, axis=1)
        attend = nn.make_causal_mask(valid, dtype=jnp.bool_) & valid[:, None, None, :]
        x = nn.Dropout(self.embedding_dropout)(nn.LayerNorm(epsilon=1e-5)(x), deterministic=deterministic)
        for _ in range(self.num_layers):
            x = Block(d, self.num_heads, self.attention_dropout, self.residual_dropout)(x, attend, deterministic)
        x = nn.LayerNorm(epsilon=1e-5)(x).reshape(b, k, 4, d)
        state_out, action_out = x[:, :, 2], x[:, :, 3]
        mu = nn.Dense(self.act_dim, kernel_init=_INIT, name="mu")(state_out)
        if self.stochastic:
            log_std = nn.Dense(self.act_dim, kernel_init=_INIT, name="log_std")(state_out)
        else:
            mu, log_std = jnp.tanh(mu), jnp.zeros_like(mu)
        cost_logp = jax.nn.log_softmax(nn.Dense(2, kernel_init=_INIT, name="cost_head")(action_out))
        return mu, log_std, cost_logp


def make_model(config: CDTConfig, act_dim: int) -> CDTModel:
    return CDTModel(
        act_dim=act_dim,
        timesteps=config.max_episode_len + config.seq_len,
        embedding_dim=config.embedding_dim,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        attention_dropout=config.attention_dropout,
        residual_dropout=config.residual_dropout,
        embedding_dropout=config.embedding_dropout,
        stochastic=config.stochastic,
    )


WindowFn = Callable[..., jax.Array]
"""``fn(params, obs, actions, reward_to_go, cost_to_go, timesteps, length) -> actions``: the action at step
``length − 1`` of each window (B, K, ...) whose first ``length`` steps are filled."""


def actor_network(config: CDTConfig, obs_dim: int, act_dim: int) -> tuple[WindowFn, Any]:
    """The evaluated policy as a function of a context window (:data:`WindowFn`) of the output parameters
    ``{"model": ..., "targets": [R̂_0, Ĉ_0]}``, and their template."""
    model = make_model(config, act_dim)
    k = config.seq_len

    def act_window(
        params: Any,
        obs: jax.Array,
        actions: jax.Array,
        reward_to_go: jax.Array,
        cost_to_go: jax.Array,
        timesteps: jax.Array,
        length: jax.Array,
    ) -> jax.Array:
        mask = (jnp.arange(k)[None, :] < length[:, None]).astype(jnp.float32)
        r_in, c_in = model_inputs(config, reward_to_go, cost_to_go)
        mu, _, _ = model.apply(params["model"], obs, actions, r_in, c_in, timesteps, mask)
        return jnp.clip(mu[jnp.arange(obs.shape[0]), length - 1], -1.0, 1.0)

    template = {"model": init_model(model, config, obs_dim, act_dim, jax.random.PRNGKey(0)), "targets": jnp.zeros(2)}
    return act_window, template


def model_inputs(config: CDTConfig, reward_to_go: jax.Array, cost_to_go: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The to-go values as the model reads them: reward_scale · R̂ and cost_offset − cost_scale · Ĉ."""
    return config.reward_scale * reward_to_go, config.cost_offset - config.cost_scale * cost_to_go


def init_model(model: CDTModel, config: CDTConfig, obs_dim: int, act_dim: int, key: jax.Array) -> Any:
    k = config.seq_len
    zeros = jnp.zeros((1, k))
    return model.init(
        key, jnp.zeros((1, k, obs_dim)), jnp.zeros((1, k, act_dim)), zeros, zeros, zeros.astype(jnp.int32), zeros + 1
    )


def first_window(
    obs: jax.Array, targets: jax.Array, seq_len: int, act_dim: int
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
    """The context of an episode's first step: ``obs`` (B, obs_dim) at the targets, the rest zeros."""
    b = obs.shape[0]
    window = jnp.zeros((b, seq_len, obs.shape[-1])).at[:, 0].set(obs)
    rtg = jnp.zeros((b, seq_len)).at[:, 0].set(targets[0])
    ctg = jnp.zeros((b, seq_len)).at[:, 0].set(targets[1])
    zeros_t = jnp.zeros((b, seq_len), jnp.int32)
    return window, jnp.zeros((b, seq_len, act_dim)), rtg, ctg, zeros_t, jnp.ones(b, jnp.int32)


# ---------------------------------------------------------------------- targets


def osrl_target_reward(task: str, cost_limit: float) -> float | None:
    """OSRL's target reward for ``task`` at cost κ: its (reward, cost) pairs interpolated linearly in the cost and
    held beyond the end pairs; ``None`` for a task OSRL has no setting for."""
    spec = OSRL_TASKS.get(task)
    if spec is None:
        return None
    pairs = sorted(spec.targets, key=lambda p: p[1])
    return float(np.interp(cost_limit, [c for _, c in pairs], [r for r, _ in pairs]))


def target_reward(
    config: CDTConfig, task: str, cost_limit: float, reward: np.ndarray, cost: np.ndarray
) -> tuple[float, str]:
    """R̂_0 of evaluated episodes and where it comes from: ``target_return``, OSRL's for the task, or the data's
    safe frontier R*_data(κ) (the lowest-cost episode's reward when no episode is within κ)."""
    if config.target_return is not None:
        return float(config.target_return), "given"
    osrl = osrl_target_reward(task, cost_limit)
    if osrl is not None:
        return osrl, "osrl"
    safe = cost <= cost_limit + 1e-9
    if safe.any():
        return float(reward[safe].max()), "frontier"
    return float(reward[np.argmin(cost)]), "lowest-cost episode"


# ---------------------------------------------------------------------- the learner


class CDTState(flax.struct.PyTreeNode):
    params: Any
    opt: Any
    log_temperature: jax.Array
    temperature_opt: Any
    key: jax.Array


def _check(config: CDTConfig, setting: Setting) -> None:
    """One :class:`ConfigError` naming the first field out of its range."""
    checks = [
        ("embedding_dim", config.embedding_dim >= 1, "≥ 1"),
        ("num_layers", config.num_layers >= 1, "≥ 1"),
        (
            "num_heads",
            config.num_heads >= 1 and config.embedding_dim % config.num_heads == 0,
            "≥ 1 and divide embedding_dim",
        ),
        ("seq_len", config.seq_len >= 1, "≥ 1"),
        (
            "max_episode_len",
            config.max_episode_len >= setting.episode_length,
            f"at least the task's episode length {setting.episode_length}",
        ),
        ("attention_dropout", 0.0 <= config.attention_dropout < 1.0, "in [0, 1)"),
        ("residual_dropout", 0.0 <= config.residual_dropout < 1.0, "in [0, 1)"),
        ("embedding_dropout", 0.0 <= config.embedding_dropout < 1.0, "in [0, 1)"),
        ("init_temperature", config.init_temperature > 0, "> 0"),
        ("weight_decay", config.weight_decay >= 0, "≥ 0"),
        ("betas", all(0.0 <= b < 1.0 for b in config.betas), "in [0, 1)"),
        ("clip_grad", config.clip_grad > 0, "> 0"),
        ("loss_cost_weight", config.loss_cost_weight >= 0, "≥ 0"),
        ("augment_percent", config.augment_percent >= 0, "≥ 0"),
        ("deg", config.deg is None or config.deg >= 0, "≥ 0"),
        ("max_rew_decrease", config.max_rew_decrease is None or config.max_rew_decrease >= 0, "≥ 0"),
        ("beta", config.beta > 0, "> 0"),
    ]
    for name, ok, requirement in checks:
        if not ok:
            raise ConfigError(f"cdt.{name} must be {requirement}, got {getattr(config, name)!r}")


class CDT(StepLearner):
    """CDT as a learner of the training loop (:class:`o3srl.algos.base.Learner`): one round is ``steps_per_round``
    gradient steps; its output is a sequence policy (:class:`o3srl.policy.SequencePolicy`)."""

    title = "CDT"

    def __init__(
        self,
        config: CDTConfig,
        setting: Setting,
        steps_per_round: int,
        *,
        task: str,
        rewards: np.ndarray,
        costs: np.ndarray,
        episode_start: np.ndarray,
        episode_length: np.ndarray,
        seed: int,
    ) -> None:
        _check(config, setting)
        self.config, self.setting, self.steps_per_round = config, setting, steps_per_round
        ep_reward = np.add.reduceat(np.asarray(rewards, np.float64), episode_start)
        ep_cost = np.add.reduceat(np.asarray(costs, np.float64), episode_start)
        self.target_reward, self.target_source = target_reward(config, task, setting.cost_limit, ep_reward, ep_cost)
        osrl = OSRL_TASKS.get(task)
        deg = config.deg if config.deg is not None else osrl.deg if osrl else FALLBACK_DEG
        span = ep_reward.max() - ep_reward.min()
        max_reward = (
            config.max_reward
            if config.max_reward is not None
            else osrl.max_reward
            if osrl
            else ep_reward.max() + 0.1 * span
        )
        decrease = (
            config.max_rew_decrease
            if config.max_rew_decrease is not None
            else osrl.max_rew_decrease
            if osrl
            else 0.2 * span
        )
        self.augmentation = {"deg": int(deg), "max_reward": float(max_reward), "max_rew_decrease": float(decrease)}
        # The relabelling is drawn once, from the run's seed (OSRL draws it once when it builds its dataset).
        aug = augment(
            ep_reward,
            ep_cost,
            np.random.default_rng(seed),
            percent=config.augment_percent,
            deg=int(deg),
            max_reward=float(max_reward),
            min_reward=config.min_reward,
            max_rew_decrease=float(decrease),
            beta=config.beta,
        )
        self.num_augmented = len(aug.source)
        self.num_episodes = len(episode_start)
        offset = config.cost_sample_offset if config.cost_sample else None
        self.table = sequence_table(rewards, costs, episode_start, episode_length, aug, offset)
        self.model = make_model(config, setting.act_dim)
        schedule = lambda count: config.learning_rate * jnp.minimum((count + 1) / config.warmup_steps, 1.0)  # noqa: E731
        self.tx = optax.chain(
            optax.clip_by_global_norm(config.clip_grad),
            optax.adamw(schedule, b1=config.betas[0], b2=config.betas[1], weight_decay=config.weight_decay),
        )
        self.temperature_tx = optax.adam(config.temperature_lr)
        self._window, _ = actor_network(config, setting.obs_dim, setting.act_dim)

    def init(self, key: jax.Array) -> CDTState:
        k_model, k_state = jax.random.split(key)
        params = init_model(self.model, self.config, self.setting.obs_dim, self.setting.act_dim, k_model)
        log_temperature = jnp.asarray(math.log(self.config.init_temperature), jnp.float32)
        return CDTState(
            params=params,
            opt=self.tx.init(params),
            log_temperature=log_temperature,
            temperature_opt=self.temperature_tx.init(log_temperature),
            key=k_state,
        )

    def act(self, actor_params: Any, obs: jax.Array) -> jax.Array:
        """The action at an episode's first step (context: ``obs`` alone, at the targets saved in
        ``actor_params``); later steps need the episode so far (:class:`o3srl.policy.SequencePolicy`)."""
        window = first_window(obs, actor_params["targets"], self.config.seq_len, self.setting.act_dim)
        return self._window(actor_params, *window)

    # ------------------------------------------------------------------ loss
    def loss(
        self, params: Any, log_temperature: jax.Array, batch: SequenceBatch, key: jax.Array
    ) -> tuple[jax.Array, Metrics]:
        cfg = self.config
        r_in, c_in = model_inputs(cfg, batch.reward_to_go, batch.cost_to_go)
        mu, log_std, cost_logp = self.model.apply(
            params, batch.obs, batch.actions, r_in, c_in, batch.timesteps, batch.mask, False, rngs={"dropout": key}
        )
        m = batch.mask
        steps = m.sum()
        metrics: Metrics = {}
        if cfg.stochastic:
            # OSRL's means over the unpadded steps and the action's dimensions
            z = (batch.actions - mu) * jnp.exp(-log_std)
            log_prob = -0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)
            entropy = log_std + 0.5 + 0.5 * math.log(2 * math.pi)
            n = steps * self.setting.act_dim
            likelihood = (log_prob * m[..., None]).sum() / n
            mean_entropy = (entropy * m[..., None]).sum() / n
            alpha = jax.lax.stop_gradient(jnp.exp(log_temperature))
            act_loss = -(likelihood + alpha * mean_entropy)
            metrics.update({"cdt/nll": -likelihood, "cdt/entropy": mean_entropy})
        else:
            act_loss = (((mu - batch.actions) ** 2) * m[..., None]).mean()  # OSRL's: padded steps count as zeros
        target = (batch.costs > 0).astype(jnp.int32)
        nll = -jnp.take_along_axis(cost_logp, target[..., None], axis=-1)[..., 0]
        cost_loss = (nll * m).mean()
        accuracy = ((cost_logp.argmax(-1) == target) * m).sum() / steps
        total = act_loss + cfg.loss_cost_weight * cost_loss
        metrics.update(
            {"loss/actor": act_loss, "loss/cost": cost_loss, "loss/total": total, "cdt/cost_accuracy": accuracy}
        )
        return total, metrics

    # ------------------------------------------------------------------ update
    def update(self, state: CDTState, data: Any) -> tuple[CDTState, Metrics]:
        """One AdamW step of the transformer on a batch of windows (and one Adam step of log α)."""
        cfg = self.config
        key, k_batch, k_drop = jax.random.split(state.key, 3)
        batch = sample_sequences(k_batch, data, self.table, cfg.seq_len, cfg.batch_size)
        (_, metrics), grads = jax.value_and_grad(self.loss, has_aux=True)(
            state.params, state.log_temperature, batch, k_drop
        )
        updates, opt = self.tx.update(grads, state.opt, state.params)
        params = optax.apply_updates(state.params, updates)
        log_temperature, temperature_opt = state.log_temperature, state.temperature_opt
        if cfg.stochastic:
            # d/d log α of α (H − H̄), H held fixed: α (H − H̄), with H̄ = −dim(a)
            gap = jax.lax.stop_gradient(metrics["cdt/entropy"] + self.setting.act_dim)
            t_grad = jnp.exp(log_temperature) * gap
            t_updates, temperature_opt = self.temperature_tx.update(t_grad, temperature_opt, log_temperature)
            log_temperature = optax.apply_updates(log_temperature, t_updates)
            metrics["cdt/temperature"] = jnp.exp(log_temperature)
        state = state.replace(
            params=params, opt=opt, log_temperature=log_temperature, temperature_opt=temperature_opt, key=key
        )
        return state, metrics

    def output(self, state: CDTState) -> tuple[Any, OutputKind]:
        targets = jnp.asarray([self.target_reward, self.setting.cost_limit], jnp.float32)
        return {"model": state.params, "targets": targets}, "sequence"

    def run_info(self) -> dict[str, Any]:
        return {
            "cdt_target_reward": self.target_reward,
            "cdt_target_reward_source": self.target_source,
            "cdt_target_cost": self.setting.cost_limit,
            "cdt_episodes": self.num_episodes,
            "cdt_augmented": self.num_augmented,
            "cdt_augmentation": self.augmentation,
        }
