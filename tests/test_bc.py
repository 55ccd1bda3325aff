"""BC-All and BC-Safe: the episode selection by hand, the contract every algorithm meets, and a dataset whose
cloned policies are known in closed form."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from tests.contract import check_contract
from tests.test_train import _actions, small_config

from o3srl.algos.bc import BCConfig, safe_transitions
from o3srl.config import TrainConfig
from o3srl.errors import ConfigError


def test_safe_transitions_are_the_episodes_within_the_limit():
    start, length = np.array([0, 3, 5, 9]), np.array([3, 2, 4, 1])
    cost = np.array([5.0, 5.0000001, 0.0, 7.0])
    assert safe_transitions(start, length, cost, 5.0).tolist() == [0, 1, 2, 5, 6, 7, 8]
    assert safe_transitions(start, length, cost, 10.0).tolist() == list(range(10))
    assert safe_transitions(start, length, cost, -0.5).size == 0


def _bc(toy_file, run_dir, algo, **kw) -> TrainConfig:
    return small_config(toy_file, run_dir, algo=algo, bc=BCConfig(hidden=(32, 32), batch_size=64), **kw)


@pytest.mark.parametrize("algo", ["bc-all", "bc-safe"])
def test_contract(toy_file, tmp_path, algo):
    """The learners' contract (tests/contract.py), and the run records what it imitated."""
    info = check_contract(lambda d, **kw: _bc(toy_file, d, algo, cost_limit=40.0, **kw), tmp_path, "loss/actor")
    assert info["bc_mode"] == algo.removeprefix("bc-") and "arms" not in info
    assert ("bc_transitions" in info) == (algo == "bc-safe")


def _two_behaviours(tmp_path, all_unsafe=False, unsafe_reward=0.0):
    """Episodes of 10 steps from observations in [0, 1]: the safe ones (cost 0) act +0.5, the unsafe ones (cost 1 per
    step, 10 per episode; reward ``unsafe_reward`` per step) act −0.5, in equal numbers. BC-Safe at κ = 5 imitates
    +0.5; BC-All the mean, 0."""
    from o3srl.data import OfflineDataset

    rng = np.random.default_rng(0)
    n_ep, T = 40, 10
    obs = rng.uniform(0, 1, (n_ep * T, 1)).astype(np.float32)
    safe = np.repeat(np.arange(n_ep) % 2 == 0, T)
    path = tmp_path / "two.hdf5"
    OfflineDataset(
        {
            "observations": obs,
            "next_observations": obs,
            "actions": np.where(safe, 0.5, -0.5)[:, None].astype(np.float32),
            "rewards": np.where(safe, 0.0, unsafe_reward).astype(np.float32),
            "costs": np.where(safe & (not all_unsafe), 0.0, 1.0).astype(np.float32),
            "terminals": np.zeros(n_ep * T, bool),
            "timeouts": np.arange(n_ep * T) % T == T - 1,
        }
    ).save(path)
    return path


def test_bc_safe_imitates_the_safe_episodes_and_bc_all_their_mean(tmp_path):
    from o3srl.train import run

    data = _two_behaviours(tmp_path)
    # BC-All's targets are ±0.5 at random observations: what it fits at one observation is a local mean of 400 such
    # labels, so it is held to 0 within 0.1 (its mean over the probes within 0.03), BC-Safe's to 0.5 within 0.05.
    for algo, expected, atol in (("bc-safe", 0.5, 0.05), ("bc-all", 0.0, 0.1)):
        cfg = dataclasses.replace(
            _bc(data, tmp_path / algo, algo, cost_limit=5.0, steps=2000),
            normalize_obs=False,
            reward_min=0.0,
            reward_max=1.0,
        )
        run(cfg)
        actions = _actions(tmp_path / algo)
        np.testing.assert_allclose(actions, expected, atol=atol, err_msg=algo)
        assert abs(float(actions.mean()) - expected) < 0.03


def test_bc_safe_without_a_safe_episode_is_one_clear_error(tmp_path):
    from o3srl.train import run

    data = _two_behaviours(tmp_path, all_unsafe=True)  # every episode costs 10
    with pytest.raises(ConfigError, match="no episode of the dataset has a cost return within the cost limit 5"):
        run(_bc(data, tmp_path / "none", "bc-safe", cost_limit=5.0, reward_min=0.0, reward_max=1.0))
    assert not (tmp_path / "none").exists()


def test_bc_cells_of_a_grid_train_one_at_a_time(toy_file, tmp_path):
    from tests.test_bench import toy_grid

    from o3srl.bench import make_packs
    from o3srl.grid import parse_grid

    data = toy_grid(toy_file, tmp_path)
    data["seeds"] = [0, 1]
    data["algorithms"] = {"bc": {"algo": "bc-safe"}, "bc-all": {"algo": "bc-all"}}
    grid = parse_grid(data, name="toy")
    assert [len(p) for p in make_packs(grid.cells, 8)] == [1, 1, 1, 1]
