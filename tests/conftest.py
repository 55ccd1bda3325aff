"""Shared fixtures: small DSRL-format datasets made in memory (no simulator needed)."""

from __future__ import annotations

import numpy as np
import pytest

from o3srl.envs.toy import toy_dataset


@pytest.fixture
def arrays() -> dict[str, np.ndarray]:
    """Three episodes of lengths 3, 2, 4 with hand-chosen rewards and costs (9 transitions)."""
    n = 9
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(n, 3)).astype(np.float32)
    return {
        "observations": obs,
        "next_observations": np.roll(obs, -1, axis=0),
        "actions": rng.uniform(-1, 1, size=(n, 2)).astype(np.float32),
        "rewards": np.array([1, 2, 3, 10, 10, 0, 0, 1, 1], np.float32),
        "costs": np.array([0, 0, 1, 5, 5, 0, 0, 0, 0], np.float32),
        "terminals": np.array([0, 0, 1, 0, 0, 0, 0, 0, 0], bool),
        "timeouts": np.array([0, 0, 0, 0, 1, 0, 0, 0, 1], bool),
    }


@pytest.fixture
def toy_file(tmp_path):
    """A small toy-task dataset on disk whose behaviour is mostly unsafe (speeds in [0.2, 1])."""
    from o3srl.data import OfflineDataset

    path = tmp_path / "toy.hdf5"
    OfflineDataset(toy_dataset(120, seed=0, low=0.2)).save(path)
    return path
