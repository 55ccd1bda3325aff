"""The Safety-Gymnasium velocity tasks in their simulator (optional extra, ``-m safety_gymnasium``): shapes, costs
in ``info``, seeded resets, the patched install, and the data pipeline (tiny zoo → ``data make`` → ``train``).

Skipped as a whole when the extra is not installed (``o3srl extras install safety-gymnasium`` installs it)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from o3srl.envs.registry import SAFETY_GYMNASIUM_TASKS, get_task

pytestmark = pytest.mark.safety_gymnasium


# Skipped only when the extra is absent: an installed but unpatched package is a broken install, and the tests
# below fail on it (test_installed_package_is_patched says why).
if importlib.util.find_spec("safety_gymnasium") is None:
    pytest.skip("safety-gymnasium is not installed (o3srl extras install safety-gymnasium)", allow_module_level=True)

TASK = "OfflineHalfCheetahVelocityGymnasium-v1"  # never terminates early, and random actions stay under its limit


@pytest.mark.parametrize("task_id", SAFETY_GYMNASIUM_TASKS)
def test_gymnasium_make_dims_bounds_and_costs(task_id):
    import gymnasium

    import o3srl.envs  # noqa: F401  (registers the ids)

    spec = get_task(task_id)
    env = gymnasium.make(task_id)
    try:
        assert env.spec.max_episode_steps == spec.max_episode_steps == 1000
        assert env.observation_space.shape == (spec.obs_dim,) and env.action_space.shape == (spec.act_dim,)
        # The training loop and data collection assume actions in [−1, 1], as for the Bullet tasks.
        np.testing.assert_array_equal(env.action_space.low, -1.0)
        np.testing.assert_array_equal(env.action_space.high, 1.0)
        obs, _ = env.reset(seed=1)
        assert obs.shape == (spec.obs_dim,)
        rng = np.random.default_rng(0)
        for _ in range(5):
            out = env.step(rng.uniform(-1, 1, spec.act_dim).astype(np.float32))
            assert len(out) == 5
            obs, reward, terminated, truncated, info = out
            assert np.isfinite(reward) and info["cost"] in (0.0, 1.0)
            if terminated or truncated:
                break
    finally:
        env.close()


@pytest.mark.parametrize("task_id", ["OfflineHopperVelocityGymnasium-v1", "OfflineSwimmerVelocityGymnasium-v1"])
def test_seeded_resets_and_steps_are_reproducible(task_id):
    from o3srl.envs import make_env

    spec = get_task(task_id)
    actions = np.random.default_rng(0).uniform(-1, 1, (30, spec.act_dim)).astype(np.float32)

    def rollout(seed: int) -> np.ndarray:
        env = make_env(task_id)
        try:
            obs, _ = env.reset(seed=seed)
            rows = [obs]
            for a in actions:
                obs, reward, terminated, truncated, info = env.step(a)
                rows.append(np.concatenate([obs, [reward, info["cost"]]]))
                if terminated or truncated:
                    break
            return np.concatenate(rows)
        finally:
            env.close()

    np.testing.assert_array_equal(rollout(7), rollout(7))
    assert not np.array_equal(rollout(7), rollout(8))


def test_episode_is_truncated_at_1000_steps():
    from o3srl.envs import make_env

    env = make_env(TASK)
    try:
        env.reset(seed=0)
        steps, done = 0, False
        while not done:
            _, _, terminated, truncated, _ = env.step(np.zeros(6, np.float32))
            steps, done = steps + 1, terminated or truncated
        assert steps == 1000 and truncated and not terminated
    finally:
        env.close()


def test_installed_package_is_patched():
    from o3srl.envs.extras import SAFETY_GYMNASIUM_PATCHES, apply_patch, package_dir

    # Every patch is already applied (read-only check: the test never writes to the installed package).
    root = package_dir()
    unpatched = [p.path for p in SAFETY_GYMNASIUM_PATCHES if apply_patch((root / p.path).read_text(), p)[1]]
    assert not unpatched, f"run `o3srl extras install safety-gymnasium`: unpatched {unpatched}"


def test_install_command_is_idempotent(capsys):
    from o3srl.cli import main
    from o3srl.envs.extras import missing_requirements

    if missing_requirements():
        pytest.skip("the pinned requirements are not installed; this test must not run pip")
    assert main(["extras", "install", "safety-gymnasium", "--no-check"]) == 0
    out = capsys.readouterr().out
    assert "already installed" in out and "patches already applied" in out


def test_patches_restore_the_original_sources(tmp_path):
    import shutil

    from o3srl.envs.extras import SAFETY_GYMNASIUM_PATCHES, package_dir, patch_package

    copy = tmp_path / "safety_gymnasium"
    shutil.copytree(package_dir(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    patched = {p.path: (copy / p.path).read_text() for p in SAFETY_GYMNASIUM_PATCHES}
    for p in SAFETY_GYMNASIUM_PATCHES:  # back to the sources as released
        (copy / p.path).write_text((copy / p.path).read_text().replace(p.new, p.old))
    assert len(patch_package(copy, SAFETY_GYMNASIUM_PATCHES)) == 14
    assert {p: (copy / p).read_text() for p in patched} == patched


# ---------------------------------------------------------------------------------------------------- pipeline
@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    """Two PPO-Lagrangian members trained for 256 steps each on HalfCheetah."""
    from o3srl.behaviour.ppo_lag import PPOLagConfig, train_ppo_lag
    from o3srl.behaviour.zoo import save_member, write_manifest

    root = tmp_path_factory.mktemp("zoo")
    for kappa in (5.0, 250.0):
        cfg = PPOLagConfig(
            TASK, cost_limit=kappa, total_steps=256, num_envs=2, rollout_len=64, epochs=2, minibatches=2, snapshots=2
        )
        result = train_ppo_lag(cfg)
        assert all(np.isfinite(r["loss/policy"]) for r in result.history)
        save_member(root / TASK, result)
    write_manifest(root / TASK, TASK)
    return root


def test_tiny_make_and_train(tmp_path, tiny_zoo):
    from o3srl.behaviour.make import MakeConfig, make_dataset
    from o3srl.cli import main
    from o3srl.data import OfflineDataset

    config = MakeConfig(TASK, episodes=3, seed=0, target=3, chunk_episodes=2)
    path = make_dataset(config, tmp_path / "hc.hdf5", zoo=str(tiny_zoo), progress=False)
    ds = OfflineDataset.load(path, action_low=-1.0, action_high=1.0)
    side = json.loads((tmp_path / "hc.hdf5.json").read_text())
    assert ds.obs_dim == 17 and ds.act_dim == 6 and np.all(ds.episodes.length == 1000)
    assert side["episodes_collected"] == 3 and side["episodes_kept"] == len(ds.episodes) == 3
    assert np.all(ds.episodes.cost_return <= 250) and set(np.unique(ds.arrays["costs"])) <= {0.0, 1.0}

    run_dir = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--task",
                TASK,
                "--dataset",
                str(path),
                "--steps",
                "100",
                "--log-every",
                "100",
                "--checkpoint-every",
                "100",
                "--eval-episodes",
                "1",
                "--eval-envs",
                "1",
                "--td3bc.hidden",
                "32",
                "--td3bc.batch-size",
                "64",
                "--o3srl.feedback-batch",
                "32",
                "--no-progress",
                "--run-dir",
                str(run_dir),
            ]
        )
        == 0
    )
    assert json.loads((run_dir / "run.json").read_text())["reward_reference"] == "dsrl"
    assert (run_dir / "eval.json").exists() and (run_dir / "policy.msgpack").exists()
