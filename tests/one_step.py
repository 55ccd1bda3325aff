"""One-step episodes with two behaviours, on which a policy that reads κ while it acts (CAPS, CCAC) must pick its
action by the cost limit: half the episodes act −0.5 for reward 0 at no cost, half +0.5 for reward 10 at cost 1."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tests.test_train import TOY

from o3srl.config import TrainConfig


def two_actions(
    tmp_path: Path,
    rewards: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
    cost: float = 1.0,
) -> Path:
    """The dataset (600 one-step episodes, observations uniform in [0, 1]) written under ``tmp_path``: every other
    episode is the costly one (action +0.5 at ``cost``); ``rewards(costly, rng)`` gives the rewards (default: 10 for
    the costly action, 0 for the free one)."""
    from o3srl.data import OfflineDataset

    n = 600
    rng = np.random.default_rng(0)
    obs = rng.uniform(0, 1, (n, 1)).astype(np.float32)
    costly = np.arange(n) % 2 == 1
    reward = 10.0 * costly if rewards is None else rewards(costly, rng)
    path = tmp_path / "two.hdf5"
    OfflineDataset(
        {
            "observations": obs,
            "next_observations": obs,
            "actions": np.where(costly, 0.5, -0.5).astype(np.float32)[:, None],
            "rewards": np.asarray(reward, np.float32),
            "costs": (cost * costly).astype(np.float32),
            "terminals": np.ones(n, bool),
            "timeouts": np.zeros(n, bool),
        }
    ).save(path)
    return path


def one_step(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` on one-step episodes of the toy environment (T = 1, raw observations, rewards in [0, 10])."""
    return dataclasses.replace(cfg, normalize_obs=False, reward_min=0.0, reward_max=10.0, env_id=TOY, episode_length=1)


def actions_at(policy: Any, obs: np.ndarray, cost_limit: float) -> np.ndarray:
    """The first action of a fresh episode in every row of ``obs`` when the policy acts for ``cost_limit``."""
    policy.cost_limit = cost_limit
    for slot in range(len(obs)):
        policy.begin_episode(slot)
    return policy(obs)[:, 0]
