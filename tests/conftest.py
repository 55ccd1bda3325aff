"""Shared fixtures: small DSRL-format datasets made in memory (no simulator needed).

The suite compiles the same small programs many times (every run builds its learner afresh, and a contract test
alone trains four runs of one config), so it keeps JAX's persistent compilation cache in the system's temporary
directory: a program compiled once is loaded, not compiled again, by later runs in this process, in the other test
workers and in the processes the tests start (the settings travel as environment variables). A loaded program is the
same executable, so results are bit for bit those of a fresh compile. ``O3SRL_TEST_COMPILATION_CACHE`` moves it;
``O3SRL_TEST_COMPILATION_CACHE=off`` turns it off."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import jax
import numpy as np
import pytest

from o3srl.envs.toy import toy_dataset

_CACHE = os.environ.get("O3SRL_TEST_COMPILATION_CACHE", str(Path(tempfile.gettempdir()) / "o3srl-tests-jax-cache"))
if _CACHE != "off":
    _SETTINGS = {
        "jax_compilation_cache_dir": _CACHE,
        "jax_persistent_cache_min_compile_time_secs": 0.0,  # the suite's programs compile in well under a second
        "jax_persistent_cache_min_entry_size_bytes": 0,
    }
    for _name, _value in _SETTINGS.items():
        os.environ[_name.upper()] = str(_value)  # the same settings here and in the processes the tests start
        jax.config.update(_name, _value)


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
