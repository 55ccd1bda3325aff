"""The task registry and the gymnasium ids: shapes, episode lengths, costs in ``info``."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from o3srl.envs import UnknownTaskError, get_task, make_env
from o3srl.envs.registry import BULLET_TASKS


def test_import_registers_ids_without_loading_the_simulator():
    code = (
        "import sys, gymnasium, o3srl.envs\n"
        "assert not {'pybullet', 'safety_gymnasium', 'mujoco'} & set(sys.modules)\n"
        "ids = [i for i in gymnasium.envs.registry if i.startswith('Offline')]\n"
        "print(len(ids))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "13"  # 8 Bullet tasks + 5 Safety-Gymnasium velocity tasks


def test_unknown_task_is_one_clear_error():
    with pytest.raises(UnknownTaskError, match="known tasks: OfflineAntCircle-v0"):
        get_task("OfflineBallSprint-v0")


@pytest.mark.parametrize("task_id", BULLET_TASKS)
def test_gymnasium_make_dims_and_costs(task_id):
    import gymnasium

    spec = get_task(task_id)
    env = gymnasium.make(task_id)
    try:
        assert env.spec.max_episode_steps == spec.max_episode_steps
        assert env.observation_space.shape == (spec.obs_dim,)
        assert env.action_space.shape == (spec.act_dim,)
        obs, _ = env.reset(seed=1)
        assert obs.shape == (spec.obs_dim,)
        rng = np.random.default_rng(0)
        for _ in range(3):
            obs, reward, terminated, truncated, info = env.step(rng.uniform(-1, 1, spec.act_dim).astype(np.float32))
            assert np.isfinite(reward) and "cost" in info and info["cost"] >= 0
    finally:
        env.close()


@pytest.mark.parametrize("task_id", ["OfflineBallRun-v0", "OfflineCarRun-v0"])
def test_episode_length_and_seeded_reset(task_id):
    spec = get_task(task_id)
    env = make_env(task_id)
    try:
        first, _ = env.reset(seed=7)
        again, _ = env.reset(seed=7)
        np.testing.assert_array_equal(first, again)
        steps, done = 0, False
        while not done:
            _, _, terminated, truncated, _ = env.step(np.zeros(spec.act_dim, np.float32))
            steps, done = steps + 1, terminated or truncated
        assert steps == spec.max_episode_steps and truncated
    finally:
        env.close()
