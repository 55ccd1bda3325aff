"""Evaluation: roll a policy out in the task's simulator and compute DSRL-normalised scores.

Episodes are run on ``num_envs`` environment copies stepped together, so the policy sees a batch of observations
per step. Exactly ``episodes`` episodes are run; episode i is reset with seed ``seed + i`` (evaluation seeds are kept
apart from training seeds by the caller), so results do not depend on ``num_envs``. Normalisation follows OSRL:
the *mean* episode reward and cost are normalised (DSRL's reference scores for known tasks, or the caller's),
safe ⇔ normalised cost ≤ 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from o3srl.transforms import is_safe, normalized_cost, normalized_reward


@dataclass(frozen=True)
class EvalResult:
    episode_rewards: np.ndarray
    episode_costs: np.ndarray
    episode_lengths: np.ndarray
    cost_limit: float
    reward_range: tuple[float, float]
    reference: str
    """Which reference scores the normalised reward uses: "dsrl", "dataset" or "given"."""
    frontier: float | None = None
    """R*_data(κ): the dataset's best episode reward among episodes with cost ≤ κ."""

    @property
    def reward(self) -> float:
        return float(self.episode_rewards.mean())

    @property
    def cost(self) -> float:
        return float(self.episode_costs.mean())

    @property
    def normalized_reward(self) -> float:
        return float(normalized_reward(self.reward, *self.reward_range))

    @property
    def normalized_cost(self) -> float:
        return float(normalized_cost(self.cost, self.cost_limit))

    @property
    def episode_normalized_rewards(self) -> np.ndarray:
        return normalized_reward(self.episode_rewards, *self.reward_range)

    @property
    def episode_normalized_costs(self) -> np.ndarray:
        return normalized_cost(self.episode_costs, self.cost_limit)

    @property
    def safe(self) -> bool:
        return is_safe(self.normalized_cost)

    @property
    def frontier_fraction(self) -> float | None:
        if self.frontier is None or not math.isfinite(self.frontier) or self.frontier == 0:
            return None
        return self.reward / self.frontier

    def metrics(self, prefix: str = "eval/") -> dict[str, float]:
        out = {
            "reward": self.reward,
            "reward_std": float(self.episode_rewards.std()),
            "cost": self.cost,
            "cost_std": float(self.episode_costs.std()),
            "normalized_reward": self.normalized_reward,
            "normalized_reward_std": float(self.episode_normalized_rewards.std()),
            "normalized_cost": self.normalized_cost,
            "normalized_cost_std": float(self.episode_normalized_costs.std()),
            "safe": float(self.safe),
            "length": float(self.episode_lengths.mean()),
            "episodes": float(len(self.episode_rewards)),
        }
        if self.frontier_fraction is not None:
            out["frontier_fraction"] = self.frontier_fraction
        return {prefix + k: v for k, v in out.items()}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("episode_rewards", "episode_costs", "episode_lengths"):
            d[key] = np.asarray(d[key]).tolist()
        d["reward_range"] = list(self.reward_range)
        d.update(self.metrics(prefix=""))
        return d


def evaluate(
    policy: Callable[[np.ndarray], np.ndarray],
    env_id: str,
    *,
    episodes: int = 20,
    cost_limit: float,
    seed: int = 0,
    num_envs: int = 4,
    reward_range: tuple[float, float] | None = None,
    reference: str = "dsrl",
    frontier: float | None = None,
    max_episode_steps: int | None = None,
    progress: bool = False,
) -> EvalResult:
    """Run ``episodes`` episodes of ``policy`` (batched: (B, obs) → (B, act)) and score them.

    A policy with a ``begin_episode(slot)`` method (a mixture, a sequence policy) is told when environment copy
    ``slot`` starts an episode, and one with an ``observe(slot, reward, cost)`` method (a sequence policy) what each
    of its steps brought. ``max_episode_steps`` caps episodes of environments without their own time limit.
    """
    from o3srl.envs import make_env
    from o3srl.envs.registry import TASKS
    from o3srl.errors import O3SRLError

    if episodes < 1:
        raise O3SRLError(f"evaluation needs at least one episode, got {episodes}")
    if reward_range is None:
        if env_id not in TASKS:
            raise O3SRLError(f"no reference scores for {env_id!r}: pass reward_range (e.g. the dataset's min/max)")
        spec = TASKS[env_id]
        reward_range, reference = (spec.min_reward, spec.max_reward), "dsrl"
    n_envs = max(1, min(num_envs, episodes))
    envs = [make_env(env_id) for _ in range(n_envs)]
    rewards = np.zeros(episodes)
    costs = np.zeros(episodes)
    lengths = np.zeros(episodes, np.int64)
    next_episode = 0
    slot_episode = [-1] * n_envs
    obs: list[np.ndarray | None] = [None] * n_envs
    observe = getattr(policy, "observe", None)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=episodes, unit="episode", desc="evaluate")

    def start(slot: int) -> None:
        nonlocal next_episode
        if next_episode >= episodes:
            slot_episode[slot] = -1
            return
        slot_episode[slot] = next_episode
        o, _ = envs[slot].reset(seed=seed + next_episode)
        obs[slot] = np.asarray(o, np.float32).reshape(-1)
        if hasattr(policy, "begin_episode"):
            policy.begin_episode(slot)
        next_episode += 1

    try:
        for slot in range(n_envs):
            start(slot)
        while any(e >= 0 for e in slot_episode):
            active = [s for s in range(n_envs) if slot_episode[s] >= 0]
            batch = np.zeros((n_envs, obs[active[0]].shape[0]), np.float32)  # type: ignore[union-attr]
            for s in active:
                batch[s] = obs[s]
            actions = np.asarray(policy(batch))
            for s in active:
                ep = slot_episode[s]
                o, r, terminated, truncated, info = envs[s].step(actions[s])
                if "cost" not in info:
                    raise O3SRLError(f"environment {env_id!r} does not report info['cost']; it cannot be evaluated")
                rewards[ep] += float(r)
                costs[ep] += float(info["cost"])
                if observe is not None:
                    observe(s, float(r), float(info["cost"]))
                lengths[ep] += 1
                obs[s] = np.asarray(o, np.float32).reshape(-1)
                if terminated or truncated or (max_episode_steps is not None and lengths[ep] >= max_episode_steps):
                    if bar is not None:
                        bar.update(1)
                    start(s)
    finally:
        for env in envs:
            env.close()
        if bar is not None:
            bar.close()
    return EvalResult(
        episode_rewards=rewards,
        episode_costs=costs,
        episode_lengths=lengths,
        cost_limit=float(cost_limit),
        reward_range=(float(reward_range[0]), float(reward_range[1])),
        reference=reference,
        frontier=frontier,
    )
