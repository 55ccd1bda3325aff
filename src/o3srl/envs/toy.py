"""A tiny continuous safe-RL task whose constrained optimum is known in closed form.

``ToyRunEnv``: episodes of T = 20 steps; the observation is the elapsed fraction of the episode ``[t / T]``; the
action ``a ∈ [−1, 1]`` is a speed. Reward ``r = (1 + a) / 2``; cost ``c = 2 max(0, a − ½)`` (running faster than ½
is unsafe, increasingly so). With cost limit κ, the best policy spends the cost budget evenly or not — r and c are
linear above ½ — so the constrained optimum is

    R*(κ) = T · ¾ + min(κ, T) / 4      (every step at ½ gives ¾ reward and no cost; each unit of cost buys ¼ reward)

e.g. R*(5) = 16.25 with cost 5; the unconstrained optimum is a = 1 everywhere: reward 20, cost 20.
``toy_dataset`` draws episodes from behaviour policies with speeds spread over [−1, 1], so the data covers safe and
unsafe behaviour. Pure numpy, no simulator: used by tests and examples.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

EPISODE_LENGTH = 20


def toy_optimum(cost_limit: float, episode_length: int = EPISODE_LENGTH) -> float:
    """R*(κ) of :class:`ToyRunEnv` (see module docstring)."""
    return episode_length * 0.75 + min(cost_limit, episode_length) / 4.0


class ToyRunEnv:
    """A gymnasium-style environment (5-tuple ``step``, ``info["cost"]``)."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, episode_length: int = EPISODE_LENGTH) -> None:
        import gymnasium

        self.episode_length = episode_length
        self.observation_space = gymnasium.spaces.Box(0.0, 1.0, (1,), np.float32)
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self._t = 0

    def _obs(self) -> np.ndarray:
        return np.array([self._t / self.episode_length], np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        self._t = 0
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = float(np.clip(np.asarray(action, np.float64).reshape(-1)[0], -1.0, 1.0))
        reward = (1.0 + a) / 2.0
        cost = 2.0 * max(0.0, a - 0.5)
        self._t += 1
        truncated = self._t >= self.episode_length
        return self._obs(), reward, False, truncated, {"cost": cost}

    def close(self) -> None:
        pass


def toy_dataset(
    num_episodes: int = 200, seed: int = 0, noise: float = 0.1, low: float = -1.0, high: float = 1.0
) -> dict[str, np.ndarray]:
    """DSRL-format arrays from behaviour policies with per-episode speeds uniform in [low, high] plus action noise."""
    rng = np.random.default_rng(seed)
    T = EPISODE_LENGTH
    speeds = rng.uniform(low, high, size=(num_episodes, 1))
    actions = np.clip(speeds + noise * rng.normal(size=(num_episodes, T)), -1.0, 1.0)
    t = np.arange(T, dtype=np.float32) / T
    obs = np.broadcast_to(t, (num_episodes, T)).reshape(-1, 1)
    next_obs = np.broadcast_to(t + 1.0 / T, (num_episodes, T)).reshape(-1, 1)
    timeouts = np.zeros((num_episodes, T), bool)
    timeouts[:, -1] = True
    a = actions.reshape(-1)
    return {
        "observations": obs.astype(np.float32),
        "next_observations": next_obs.astype(np.float32),
        "actions": a[:, None].astype(np.float32),
        "rewards": ((1.0 + a) / 2.0).astype(np.float32),
        "costs": (2.0 * np.maximum(0.0, a - 0.5)).astype(np.float32),
        "terminals": np.zeros(num_episodes * T, bool),
        "timeouts": timeouts.reshape(-1),
    }
