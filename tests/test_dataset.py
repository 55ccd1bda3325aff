"""The dataset type: validation errors, episode views, HDF5/npz round trips, DSRL's exact layout."""

import h5py
import numpy as np
import pytest

from o3srl.data import KEYS, DatasetError, OfflineDataset, safe_frontier


def test_episode_views(arrays):
    ds = OfflineDataset(arrays)
    ep = ds.episodes
    assert len(ds) == 9 and len(ep) == 3
    np.testing.assert_array_equal(ep.start, [0, 3, 5])
    np.testing.assert_array_equal(ep.length, [3, 2, 4])
    np.testing.assert_allclose(ep.reward_return, [6, 20, 2])
    np.testing.assert_allclose(ep.cost_return, [1, 10, 0])
    assert ds.obs_dim == 3 and ds.act_dim == 2


def test_safe_frontier(arrays):
    ep = OfflineDataset(arrays).episodes
    assert safe_frontier(ep, 0.0) == 2.0
    assert safe_frontier(ep, 5.0) == 6.0
    assert safe_frontier(ep, 10.0) == 20.0
    assert np.isnan(safe_frontier(ep, -1.0))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda a: a.pop("costs"), "missing key.*costs"),
        (lambda a: a.__setitem__("extra", np.zeros(9)), "unexpected key.*extra"),
        (lambda a: a.__setitem__("rewards", np.zeros(8, np.float32)), "rewards has 8 rows but observations has 9"),
        (lambda a: a.__setitem__("rewards", np.zeros((9, 2), np.float32)), r"rewards has shape \(9, 2\)"),
        (lambda a: a.__setitem__("actions", np.zeros(9, np.float32)), r"actions has shape \(9,\)"),
        (lambda a: a["observations"].__setitem__((4, 1), np.nan), "observations has 1 non-finite value.*row 4"),
        (lambda a: a["costs"].__setitem__(2, np.inf), "costs has 1 non-finite"),
        (lambda a: a.__setitem__("timeouts", np.zeros(9, bool)), "last episode has no boundary"),
        (lambda a: a.__setitem__("terminals", np.full(9, 2)), "terminals must hold only 0/1"),
        (lambda a: a.__setitem__("rewards", np.array(["a"] * 9)), "rewards has dtype"),
        (lambda a: a.__setitem__("next_observations", np.zeros((9, 4), np.float32)), "next_observations has dim 4"),
    ],
)
def test_validation_errors_name_the_key(arrays, mutate, message):
    mutate(arrays)
    with pytest.raises(DatasetError, match=message):
        OfflineDataset(arrays)


def test_empty_dataset_is_rejected(arrays):
    empty = {k: v[:0] for k, v in arrays.items()}
    with pytest.raises(DatasetError, match="empty"):
        OfflineDataset(empty)


def test_actions_outside_env_bounds(arrays):
    arrays["actions"][6, 1] = 1.5
    with pytest.raises(DatasetError, match=r"outside the environment's bounds \[-1, 1\].*row 6, dim 1"):
        OfflineDataset(arrays, action_low=-1.0, action_high=1.0)
    OfflineDataset(arrays)  # without known bounds the same data is fine


def test_flags_and_dtypes_are_coerced(arrays):
    arrays["terminals"] = arrays["terminals"].astype(np.float64)
    arrays["rewards"] = arrays["rewards"].astype(np.float64)
    ds = OfflineDataset(arrays)
    assert ds["terminals"].dtype == np.bool_ and ds["rewards"].dtype == np.float32


@pytest.mark.parametrize("suffix", [".hdf5", ".h5", ".npz"])
def test_round_trip(arrays, tmp_path, suffix):
    path = tmp_path / f"d{suffix}"
    OfflineDataset(arrays).save(path)
    back = OfflineDataset.load(path)
    for key in KEYS:
        np.testing.assert_array_equal(back[key], OfflineDataset(arrays)[key])
    assert not list(tmp_path.glob("*.tmp"))


def test_saved_hdf5_has_dsrls_layout(arrays, tmp_path):
    path = OfflineDataset(arrays).save(tmp_path / "d.hdf5")
    with h5py.File(path, "r") as f:
        assert sorted(f.keys()) == sorted(KEYS)
        for key in KEYS:
            assert isinstance(f[key], h5py.Dataset)
            assert f[key].compression == "gzip"
            assert f[key].dtype == (np.bool_ if key in ("terminals", "timeouts") else np.float32)


def test_a_file_written_like_dsrl_loads(arrays, tmp_path):
    """Write the file the way DSRL's own tooling does (h5py, gzip, the 7 top-level keys), then load it."""
    path = tmp_path / "OfflineBallRun-v0.hdf5"
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value, compression="gzip")
    ds = OfflineDataset.load(path)
    assert len(ds.episodes) == 3


def test_load_errors(tmp_path, arrays):
    with pytest.raises(DatasetError, match="does not exist"):
        OfflineDataset.load(tmp_path / "missing.hdf5")
    bad = tmp_path / "bad.hdf5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(DatasetError, match="not a readable HDF5"):
        OfflineDataset.load(bad)
    with pytest.raises(DatasetError, match="unknown file type"):
        OfflineDataset.load(bad.rename(tmp_path / "bad.csv"))
    grouped = tmp_path / "grouped.hdf5"
    with h5py.File(grouped, "w") as f:
        g = f.create_group("observations")
        g.create_dataset("x", data=np.zeros(3))
    with pytest.raises(DatasetError, match="group"):
        OfflineDataset.load(grouped)


def test_failed_save_leaves_nothing(arrays, tmp_path, monkeypatch):
    import o3srl.data.dataset as mod

    def boom(path, arrays):
        raise OSError("disk full")

    monkeypatch.setattr(mod, "write_dsrl_hdf5", boom)
    with pytest.raises(OSError):
        OfflineDataset(arrays).save(tmp_path / "d.hdf5")
    assert list(tmp_path.iterdir()) == []
