"""The built-in default dataset: DSRL layout, determinism, the grid filter."""

from __future__ import annotations

import json

import numpy as np

from o3srl.behaviour.scripted import grid_filter, make_default_dataset
from o3srl.data import OfflineDataset


def test_grid_filter_hand_example():
    # Max cost 10, 2 × 2 grid over cost [0, 10] and reward [0, 4]; at most 1 episode per cell.
    costs = np.array([0.0, 1.0, 2.0, 9.0, 11.0, 6.0])
    rewards = np.array([0.0, 0.5, 4.0, 4.0, 4.0, 0.1])
    keep = grid_filter(
        costs, rewards, cost_bins=2, reward_bins=2, per_cell=1, max_cost=10.0, rng=np.random.default_rng(0)
    )
    # Episode 4 is above the max cost. Cells: (low cost, low reward) = {0, 1} → one of them; (low, high) = {2};
    # (high, high) = {3}; (high, low) = {5}.
    assert 4 not in keep and {2, 3, 5} <= set(keep.tolist())
    assert len(keep) == 4 and len({0, 1} & set(keep.tolist())) == 1
    assert list(keep) == sorted(keep)


def test_small_default_dataset_is_dsrl_format_and_deterministic(tmp_path):
    a = make_default_dataset(tmp_path / "a.hdf5", episodes=12, per_cell=100)
    b = make_default_dataset(tmp_path / "b.hdf5", episodes=12, per_cell=100)
    side_a = json.loads((tmp_path / "a.hdf5.json").read_text())
    side_b = json.loads((tmp_path / "b.hdf5.json").read_text())
    assert side_a["sha256"] == side_b["sha256"]
    ds = OfflineDataset.load(a, action_low=-1.0, action_high=1.0)
    assert ds.obs_dim == 7 and ds.act_dim == 2
    assert np.all(ds.episodes.length == 100) and np.all(ds.episodes.cost_return <= 80)
    assert side_a["episodes_kept"] == len(ds.episodes) and side_a["transitions"] == len(ds)
    assert set(np.unique(ds["costs"])) <= {0.0, 1.0}
    assert ds["timeouts"].sum() == len(ds.episodes) and not ds["terminals"].any()
    assert OfflineDataset.load(b).arrays.keys() == ds.arrays.keys()
