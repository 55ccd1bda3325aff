"""Behaviour zoo and ``o3srl data make``: PPO-Lagrangian maths, a tiny training run, collection, determinism,
resumability and the grid filter's sizing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from o3srl.behaviour.make import MakeConfig, MakeError, make_dataset
from o3srl.behaviour.ppo_lag import LagrangeState, PPOLagConfig, gae, snapshot_action, train_ppo_lag, update_lagrange
from o3srl.behaviour.scripted import grid_cells, grid_filter, per_cell_for_target
from o3srl.behaviour.zoo import ZooError, load_zoo, save_member, write_manifest
from o3srl.data import OfflineDataset
from o3srl.envs import UnknownTaskError
from o3srl.errors import O3SRLError

TASK = "OfflineBallRun-v0"


# ---------------------------------------------------------------------------------------------------- maths
def test_gae_hand_example():
    # One environment, three steps, episode ends after step 1 (done) and a new one runs at step 2.
    rewards = np.array([[1.0], [2.0], [3.0]])
    values = np.array([[0.5], [1.0], [2.0]])
    dones = np.array([[0.0], [1.0], [0.0]])
    adv, ret = gae(rewards, values, np.array([4.0]), dones, gamma=0.5, lam=0.5)
    # t=2: δ = 3 + 0.5·4 − 2 = 3, A = 3. t=1 (done): δ = 2 − 1 = 1, A = 1.
    # t=0: δ = 1 + 0.5·1 − 0.5 = 1, A = 1 + 0.25·1 = 1.25.
    np.testing.assert_allclose(adv[:, 0], [1.25, 1.0, 3.0])
    np.testing.assert_allclose(ret[:, 0], [1.75, 2.0, 5.0])


def test_lagrange_updates_hand_example():
    pid = PPOLagConfig(TASK, cost_limit=10.0, total_steps=4096, kp=0.1, ki=0.01, kd=0.01)
    s = update_lagrange(LagrangeState(), 30.0, pid)  # error 20: P = 2, I = 0.2, no derivative yet
    assert s.value == pytest.approx(2.2) and s.integral == pytest.approx(0.2)
    s = update_lagrange(s, 35.0, pid)  # error 25: P = 2.5, I = 0.45, D = 0.01·5
    assert s.value == pytest.approx(2.5 + 0.45 + 0.05)
    s = update_lagrange(s, 0.0, pid)  # error −10: P = −1, I = 0.35 → clipped at 0
    assert s.value == 0.0 and s.integral == pytest.approx(0.35)
    grad = PPOLagConfig(TASK, cost_limit=10.0, total_steps=4096, lagrangian="gradient", lambda_lr=0.05)
    assert update_lagrange(LagrangeState(1.0), 30.0, grad).value == pytest.approx(2.0)
    assert update_lagrange(LagrangeState(0.2), 0.0, grad).value == 0.0


def test_per_cell_for_target_hand_example():
    # Max cost 10, 2 × 2 grid. Cells: (low cost, low reward) holds 0, 1, 2; (low, high) holds 3; (high, high) 4, 5;
    # episode 6 is above the max cost.
    costs = np.array([0.0, 1.0, 2.0, 3.0, 9.0, 8.0, 12.0])
    rewards = np.array([0.0, 0.5, 1.0, 4.0, 4.0, 3.5, 4.0])
    ok, cell = grid_cells(costs, rewards, cost_bins=2, reward_bins=2, max_cost=10.0)
    assert ok.tolist() == [0, 1, 2, 3, 4, 5] and cell.tolist() == [0, 0, 0, 1, 3, 3]
    kw = dict(cost_bins=2, reward_bins=2, max_cost=10.0)
    # Counts per cell (3, 1, 2): cap 1 keeps 3, cap 2 keeps 5, cap 3 keeps 6.
    assert per_cell_for_target(costs, rewards, target=3, **kw) == 1
    assert per_cell_for_target(costs, rewards, target=4, **kw) == 2
    assert per_cell_for_target(costs, rewards, target=6, **kw) == 3
    assert per_cell_for_target(costs, rewards, target=100, **kw) == 3
    keep = grid_filter(costs, rewards, per_cell=2, rng=np.random.default_rng(0), **kw)
    assert len(keep) == 5 and 6 not in keep and {3, 4, 5} <= set(keep.tolist())


# ---------------------------------------------------------------------------------------------------- zoo
@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    """Two PPO-Lagrangian members trained for 256 steps each (2 envs × 64 steps × 2 iterations)."""
    root = tmp_path_factory.mktemp("zoo")
    results = []
    for kappa in (5.0, 40.0):
        cfg = PPOLagConfig(
            TASK, cost_limit=kappa, total_steps=256, num_envs=2, rollout_len=64, epochs=2, minibatches=2, snapshots=2
        )
        result = train_ppo_lag(cfg)
        save_member(root / TASK, result)
        results.append(result)
    write_manifest(root / TASK, TASK)
    return root, results


def test_tiny_training_run_has_finite_losses_and_loadable_snapshots(tiny_zoo):
    root, results = tiny_zoo
    for result in results:
        assert len(result.history) == 2 and len(result.snapshots) == 2
        for row in result.history:
            assert np.isfinite(row["loss/policy"]) and np.isfinite(row["loss/value"])
    members = load_zoo(TASK, root)
    assert [m.cost_limit for m in members] == [5.0, 40.0]
    snap = members[0].snapshots[-1]
    np.testing.assert_array_equal(snap["actor"]["l0"]["w"], results[0].snapshots[-1]["actor"]["l0"]["w"])
    action = snapshot_action(snap, np.zeros((3, 7)))
    assert action.shape == (3, 2) and np.all(np.abs(action) <= 1.0)
    manifest = json.loads((root / TASK / "manifest.json").read_text())
    assert [m["name"] for m in manifest["members"]] == ["ppolag-k5", "ppolag-k40"]


def test_missing_zoo_and_unknown_task_are_clear_errors(tmp_path):
    with pytest.raises(ZooError, match="train-behaviour"):
        load_zoo(TASK, tmp_path)
    with pytest.raises(UnknownTaskError):
        make_dataset(MakeConfig("OfflineBallSprint-v0"), tmp_path / "x.hdf5")


# ---------------------------------------------------------------------------------------------------- data make
def _make(tmp_path, zoo_root, name, **kw):
    config = MakeConfig(TASK, episodes=kw.pop("episodes", 8), seed=kw.pop("seed", 3), target=6, chunk_episodes=3)
    return make_dataset(config, tmp_path / name, zoo=str(zoo_root), progress=False, **kw)


def test_tiny_make_writes_dsrl_file_and_sidecar(tmp_path, tiny_zoo):
    path = _make(tmp_path, tiny_zoo[0], "a.hdf5")
    ds = OfflineDataset.load(path, action_low=-1.0, action_high=1.0)
    side = json.loads((tmp_path / "a.hdf5.json").read_text())
    assert ds.obs_dim == 7 and ds.act_dim == 2 and np.all(ds.episodes.length == 100)
    assert side["episodes_collected"] == 8 and side["episodes_kept"] == len(ds.episodes) >= 6
    assert side["transitions"] == len(ds) and np.all(ds.episodes.cost_return <= 80)
    assert sum(z["episodes_collected"] for z in side["zoo"]) == 8
    assert not (tmp_path / "a.hdf5.partial").exists()
    import h5py

    with h5py.File(path) as f:
        assert sorted(f.keys()) == sorted(
            ["observations", "next_observations", "actions", "rewards", "costs", "terminals", "timeouts"]
        )
        assert f["terminals"].dtype == bool and f["observations"].dtype == np.float32
        assert f["rewards"].compression == "gzip"


def test_collection_is_deterministic_and_resumable(tmp_path, tiny_zoo):
    whole = _make(tmp_path, tiny_zoo[0], "whole.hdf5")
    assert _make(tmp_path, tiny_zoo[0], "again.hdf5") is not None
    # Interrupted after one chunk: the partial directory keeps it and a rerun finishes the same file.
    assert _make(tmp_path, tiny_zoo[0], "resumed.hdf5", max_chunks=1) is None
    assert len(list((tmp_path / "resumed.hdf5.partial").glob("chunk-*.npz"))) == 1
    resumed = _make(tmp_path, tiny_zoo[0], "resumed.hdf5")
    sha = {p: json.loads((tmp_path / f"{p}.hdf5.json").read_text())["sha256"] for p in ("whole", "again", "resumed")}
    assert sha["whole"] == sha["again"] == sha["resumed"]
    assert json.loads((tmp_path / "resumed.hdf5.json").read_text())["chunks_resumed"] == 1
    assert whole.read_bytes() == resumed.read_bytes()
    other = _make(tmp_path, tiny_zoo[0], "other.hdf5", seed=4)
    assert json.loads((tmp_path / "other.hdf5.json").read_text())["sha256"] != sha["whole"]
    assert other.exists()


def test_stale_partial_directory_is_refused(tmp_path, tiny_zoo):
    assert _make(tmp_path, tiny_zoo[0], "p.hdf5", max_chunks=1) is None
    with pytest.raises(MakeError, match="different collection"):
        _make(tmp_path, tiny_zoo[0], "p.hdf5", seed=99)


def test_cli_reports_unknown_task_in_one_line(capsys):
    from o3srl.cli import main

    assert main(["data", "make", "OfflineBallSprint-v0", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown task 'OfflineBallSprint-v0'")
    assert main(["data", "train-behaviour", "OfflineBallSprint-v0"]) == 2


# ---------------------------------------------------------------------------------------------------- continuing
def _copy_member(src_root, dst_root, name="ppolag-k5", strip_resume=False):
    """Copy one member of the tiny zoo; ``strip_resume`` makes it look like a member trained before snapshots kept
    the state needed to continue."""
    from flax import serialization

    (dst_root / TASK).mkdir(parents=True)
    blob = (src_root / TASK / f"{name}.msgpack").read_bytes()
    if strip_resume:
        state = serialization.msgpack_restore(blob)
        state = {k: {n: v for n, v in snap.items() if n != "resume"} for k, snap in state.items()}
        blob = serialization.msgpack_serialize(state)
    (dst_root / TASK / f"{name}.msgpack").write_bytes(blob)
    meta = json.loads((src_root / TASK / f"{name}.json").read_text())
    meta.pop("segments", None)
    (dst_root / TASK / f"{name}.json").write_text(json.dumps(meta))


def test_continuing_a_member_appends_snapshots_and_keeps_its_history(tmp_path, tiny_zoo):
    from o3srl.behaviour.zoo import _train_member, read_member

    root = tmp_path / "zoo"
    _copy_member(tiny_zoo[0], root)
    before = read_member(root / TASK, "ppolag-k5")
    assert before.steps == 256 and [("resume" in s) for s in before.snapshots] == [False, True]
    _train_member((TASK, 5.0, 256, 0, str(root), True))
    after = read_member(root / TASK, "ppolag-k5")
    meta = json.loads((root / TASK / "ppolag-k5.json").read_text())
    assert [int(s["step"]) for s in after.snapshots] == [128, 256, 384, 512]
    assert [("resume" in s) for s in after.snapshots] == [False, False, False, True]  # only the newest can continue
    for old, kept in zip(before.snapshots, after.snapshots[:2]):
        np.testing.assert_array_equal(old["actor"]["l0"]["w"], kept["actor"]["l0"]["w"])
    # the second segment keeps the member's hyperparameters, with a seed of its own and no value warm-up (the
    # snapshot carried its value heads)
    assert [g["steps"] for g in meta["segments"]] == [256, 256] and meta["config"]["total_steps"] == 512
    assert meta["segments"][1]["seed"] == meta["segments"][0]["seed"] + 7919
    assert meta["config"]["num_envs"] == 2 and meta["config"]["value_warmup_iterations"] == 0
    assert [s["step"] for s in meta["snapshots"]] == [128, 256, 384, 512]
    write_manifest(root / TASK, TASK)
    assert [len(m.snapshots) for m in load_zoo(TASK, root)] == [4]  # collection sees the whole learning curve


def test_continuing_without_value_heads_warms_them_up_with_the_policy_frozen(tiny_zoo):
    from o3srl.behaviour.ppo_lag import _start_from, init_params

    start = {k: v for k, v in tiny_zoo[1][0].snapshots[-1].items() if k != "resume"}
    cfg = PPOLagConfig(
        TASK,
        cost_limit=5.0,
        total_steps=256,
        num_envs=2,
        rollout_len=64,
        epochs=2,
        minibatches=2,
        snapshots=2,
        seed=3,
        value_warmup_iterations=1,
    )
    result = train_ppo_lag(cfg, start=start)
    first, last = result.snapshots
    # iteration 0 trained the value heads only: the actor is the one continued from, bit for bit
    np.testing.assert_array_equal(first["actor"]["l1"]["w"], start["actor"]["l1"]["w"])
    np.testing.assert_array_equal(first["log_std"], start["log_std"])
    assert not np.array_equal(last["actor"]["l1"]["w"], start["actor"]["l1"]["w"])
    # observation statistics carry over and keep updating; a snapshot from another network shape is refused
    params, obs_rms, _, lagrange = _start_from(start, init_params(cfg, 7, 2))
    np.testing.assert_array_equal(obs_rms.mean, start["obs_mean"])
    assert obs_rms.count == start["step"] and lagrange.value == 0.0
    from dataclasses import replace

    from o3srl.errors import ConfigError

    with pytest.raises(ConfigError, match="layer shapes"):
        _start_from(start, init_params(replace(cfg, hidden=(32, 32)), 7, 2))


def test_continue_restores_the_multiplier_and_needs_an_existing_member(tmp_path, tiny_zoo):
    from o3srl.behaviour.ppo_lag import _start_from, init_params
    from o3srl.behaviour.zoo import read_member, train_zoo

    snap = tiny_zoo[1][0].snapshots[-1]
    resume = dict(snap["resume"], **{"lambda": np.asarray(2.5), "lambda_integral": np.asarray(0.7)})
    cfg = PPOLagConfig(TASK, cost_limit=5.0, total_steps=256, num_envs=2, rollout_len=64, minibatches=2)
    params, _, ret_rms, lagrange = _start_from(dict(snap, resume=resume), init_params(cfg, 7, 2))
    assert (lagrange.value, lagrange.integral) == (2.5, 0.7)
    np.testing.assert_array_equal(params["value_c"]["l2"]["w"], snap["resume"]["value_c"]["l2"]["w"])
    assert float(ret_rms["r"].var) == float(snap["resume"]["ret_var_r"])
    with pytest.raises(ZooError, match="no such member"):
        train_zoo([TASK], cost_limits=[5.0], steps=256, out=tmp_path, continue_training=True)
    root = tmp_path / "old"
    _copy_member(tiny_zoo[0], root, strip_resume=True)
    meta = json.loads((root / TASK / "ppolag-k5.json").read_text())
    (root / TASK / "ppolag-k5.json").write_text(json.dumps(dict(meta, snapshots=meta["snapshots"][:1])))
    with pytest.raises(ZooError, match="half-written"):
        read_member(root / TASK, "ppolag-k5")


def test_init_from_starts_new_members_from_another_one(tmp_path, tiny_zoo):
    from o3srl.behaviour.zoo import read_member, train_zoo

    root = tmp_path / "zoo"
    _copy_member(tiny_zoo[0], root, strip_resume=True)  # without value heads: one value-only iteration first
    source = read_member(root / TASK, "ppolag-k5")
    train_zoo([TASK], cost_limits=[40.0], steps=256, seed=1, out=root, init_from="ppolag-k5")
    new = read_member(root / TASK, "ppolag-k40")
    meta = json.loads((root / TASK / "ppolag-k40.json").read_text())
    assert meta["initialised_from"] == {"member": "ppolag-k5", "steps": 256}
    assert meta["cost_limit"] == 40.0 and meta["config"]["cost_limit"] == 40.0 and meta["config"]["seed"] == 401
    assert meta["config"]["num_envs"] == 2 and meta["config"]["value_warmup_iterations"] == 1  # the source's settings
    # its own snapshots only (the source's stay in the source), the first still the source's policy (warm-up)
    assert [int(s["step"]) for s in new.snapshots] == [128, 256]
    np.testing.assert_array_equal(new.snapshots[0]["actor"]["l0"]["w"], source.snapshots[-1]["actor"]["l0"]["w"])
    assert "resume" in new.snapshots[-1]
    assert [m.name for m in load_zoo(TASK, root)] == ["ppolag-k5", "ppolag-k40"]
    with pytest.raises(O3SRLError, match="use --continue"):
        train_zoo([TASK], cost_limits=[5.0], steps=256, out=root, init_from="ppolag-k5")
    with pytest.raises(ZooError, match="no such member"):
        train_zoo([TASK], cost_limits=[20.0], steps=256, out=root, init_from="ppolag-k7")


def test_init_from_another_task_widens_the_policy_to_the_new_observation(tmp_path, tiny_zoo):
    """BallRun (obs 7) → BallCircle (obs 8, the same robot's 7 first): the new input and the zeroed ones start
    at zero weight, the rest is the source's policy; value heads start afresh after a value-only warm-up."""
    from o3srl.behaviour.ppo_lag import widen_snapshot
    from o3srl.behaviour.zoo import read_member, train_zoo

    root = tmp_path / "zoo"
    _copy_member(tiny_zoo[0], root)
    source = read_member(root / TASK, "ppolag-k5").snapshots[-1]
    wide = widen_snapshot(source, 8, (0, 1))
    w, w0 = wide["actor"]["l0"]["w"], source["actor"]["l0"]["w"]
    assert w.shape == (8, w0.shape[1]) and "resume" not in wide
    np.testing.assert_array_equal(w[2:7], w0[2:7])
    assert not w[[0, 1, 7]].any()
    np.testing.assert_array_equal(wide["obs_mean"][:7], source["obs_mean"])
    assert wide["obs_mean"][7] == 0.0 and wide["obs_var"][7] == 1.0
    # a policy that ignores the new input acts as the source did
    obs = np.random.default_rng(0).normal(size=(4, 8))
    unzeroed = widen_snapshot(source, 8)
    np.testing.assert_allclose(snapshot_action(unzeroed, obs), snapshot_action(source, obs[:, :7]), atol=1e-6)

    circle = "OfflineBallCircle-v0"
    train_zoo(
        [circle],
        cost_limits=[20.0],
        steps=256,
        seed=1,
        out=root,
        init_from=f"{TASK}/ppolag-k5",
        init_zero_inputs=(0, 1),
    )
    meta = json.loads((root / circle / "ppolag-k20.json").read_text())
    assert meta["initialised_from"] == {"task": TASK, "member": "ppolag-k5", "steps": 256, "zeroed_inputs": [0, 1]}
    assert meta["task"] == circle and meta["config"]["task_id"] == circle and meta["config"]["cost_limit"] == 20.0
    assert meta["config"]["value_warmup_iterations"] == 1
    new = read_member(root / circle, "ppolag-k20")
    np.testing.assert_array_equal(new.snapshots[0]["actor"]["l0"]["w"], w)  # policy frozen during the warm-up
    assert [m.name for m in load_zoo(circle, root)] == ["ppolag-k20"]

    with pytest.raises(O3SRLError, match="robot must be the same"):
        train_zoo(["OfflineCarCircle-v0"], cost_limits=[20.0], steps=256, out=root, init_from=f"{TASK}/ppolag-k5")
    with pytest.raises(O3SRLError, match="dimensions 0..6"):
        train_zoo(
            [circle], cost_limits=[30.0], steps=256, out=root, init_from=f"{TASK}/ppolag-k5", init_zero_inputs=(7,)
        )
    with pytest.raises(O3SRLError, match="goes with --init-from TASK/MEMBER"):
        train_zoo([TASK], cost_limits=[30.0], steps=256, out=root, init_from="ppolag-k5", init_zero_inputs=(0,))
    with pytest.raises(O3SRLError, match="without its task"):
        train_zoo([TASK], cost_limits=[30.0], steps=256, out=root, init_from=f"{TASK}/ppolag-k5")
