"""The optional Safety-Gymnasium tasks without the simulator: registry constants, the source patches of
``o3srl extras install safety-gymnasium``, and one clear error when the extra is missing."""

from __future__ import annotations

import numpy as np
import pytest

from o3srl.envs.extras import INSTALL_COMMAND, SAFETY_GYMNASIUM_PATCHES, ExtraError, Patch, apply_patch, patch_package
from o3srl.envs.registry import BULLET_TASKS, SAFETY_GYMNASIUM_TASKS, TASKS, get_task

# DSRL's dsrl/infos.py: (MIN_EPISODE_REWARD, MAX_EPISODE_REWARD, MAX_EPISODE_COST, trajectories in the file name).
DSRL_VELOCITY = {
    "Ant": (6.1519012451171875, 2976.276611328125, 250.0, 2249),
    "HalfCheetah": (5.7509765625, 2806.93310546875, 250.0, 2495),
    "Hopper": (37.05154800415039, 1911.396728515625, 250.0, 2240),
    "Swimmer": (0.07114458084106445, 238.95831298828125, 200.0, 1686),
    "Walker2d": (18.668498992919922, 3418.223876953125, 300.0, 2729),
}
DIMS = {"Ant": (27, 8), "HalfCheetah": (17, 6), "Hopper": (11, 3), "Swimmer": (8, 2), "Walker2d": (17, 6)}


# ---------------------------------------------------------------------------------------------------- registry
def test_velocity_tasks_carry_dsrls_constants():
    assert len(BULLET_TASKS) == 8 and len(SAFETY_GYMNASIUM_TASKS) == 5 and len(TASKS) == 13
    for robot, (lo, hi, max_cost, n) in DSRL_VELOCITY.items():
        spec = get_task(f"Offline{robot}VelocityGymnasium-v1")
        assert spec.simulator == "safety_gymnasium" and spec.simulator_id == f"Safety{robot}Velocity-v1"
        assert (spec.min_reward, spec.max_reward, spec.max_cost, spec.dsrl_num_trajectories) == (lo, hi, max_cost, n)
        assert (spec.obs_dim, spec.act_dim) == DIMS[robot] and spec.max_episode_steps == 1000
    assert all(get_task(t).simulator == "bullet" and get_task(t).simulator_id is None for t in BULLET_TASKS)


# ---------------------------------------------------------------------------------------------------- patches
PATCH = Patch("a.py", "    color: np.array = COLOR['x']\n", "    color: np.array = field(default_factory=f)\n", "test")


def test_patch_applies_once_and_is_then_a_no_op():
    text = "class A:\n    color: np.array = COLOR['x']\n"
    patched, changed = apply_patch(text, PATCH)
    assert changed and patched == "class A:\n    color: np.array = field(default_factory=f)\n"
    assert apply_patch(patched, PATCH) == (patched, False)


@pytest.mark.parametrize(
    "text, message",
    [
        ("class A:\n    colour = 1\n", "not at all"),
        ("    color: np.array = COLOR['x']\n" * 2, "more than once"),
    ],
)
def test_unexpected_source_fails_loudly(text, message):
    with pytest.raises(ExtraError, match=message):
        apply_patch(text, PATCH)


def test_patch_package_writes_nothing_when_one_file_does_not_match(tmp_path):
    (tmp_path / "a.py").write_text("    color: np.array = COLOR['x']\n")
    (tmp_path / "b.py").write_text("something else\n")
    other = Patch("b.py", "old\n", "new\n", "test")
    with pytest.raises(ExtraError, match="b.py"):
        patch_package(tmp_path, [PATCH, other])
    assert (tmp_path / "a.py").read_text() == "    color: np.array = COLOR['x']\n"
    with pytest.raises(ExtraError, match="no such file"):
        patch_package(tmp_path, [Patch("c.py", "x", "y", "test")])
    assert patch_package(tmp_path, [PATCH]) == ["a.py"]
    assert patch_package(tmp_path, [PATCH]) == []


def test_the_patch_table_is_consistent():
    for patch in SAFETY_GYMNASIUM_PATCHES:
        assert patch.old != patch.new and patch.old not in patch.new
    files = {p.path for p in SAFETY_GYMNASIUM_PATCHES}
    assert {"assets/robot.py", "bases/base_agent.py", "assets/geoms/hazards.py"} <= files and len(files) == 14


# ---------------------------------------------------------------------------------------------------- missing extra
@pytest.fixture
def without_safety_gymnasium(monkeypatch):
    import o3srl.envs.make

    monkeypatch.setattr(o3srl.envs.make, "_importable", lambda module: False)


def test_missing_extra_is_one_clear_error(without_safety_gymnasium):
    import gymnasium

    import o3srl.envs  # noqa: F401  (registers the ids)
    from o3srl.envs.make import EnvError, make_env

    for build in (make_env, gymnasium.make):
        with pytest.raises(EnvError, match=f"`{INSTALL_COMMAND}`"):
            build("OfflineHalfCheetahVelocityGymnasium-v1")


def test_cli_names_the_install_command(without_safety_gymnasium, tmp_path, capsys):
    from o3srl.cli import main
    from o3srl.data import OfflineDataset

    assert (
        main(["data", "make", "OfflineSwimmerVelocityGymnasium-v1", "--quiet", "--out", str(tmp_path / "s.hdf5")]) == 2
    )
    assert main(["data", "train-behaviour", "OfflineSwimmerVelocityGymnasium-v1", "--out", str(tmp_path)]) == 2
    rng = np.random.default_rng(0)
    n = 10
    OfflineDataset(
        {
            "observations": rng.normal(size=(n, 8)).astype(np.float32),
            "next_observations": rng.normal(size=(n, 8)).astype(np.float32),
            "actions": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
            "rewards": np.ones(n, np.float32),
            "costs": np.zeros(n, np.float32),
            "terminals": np.zeros(n, bool),
            "timeouts": np.arange(n) % 5 == 4,
        }
    ).save(tmp_path / "swimmer.hdf5")
    assert (
        main(
            [
                "train",
                "--task",
                "OfflineSwimmerVelocityGymnasium-v1",
                "--dataset",
                str(tmp_path / "swimmer.hdf5"),
                "--run-dir",
                str(tmp_path / "run"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") and INSTALL_COMMAND in line for line in err)
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob("*.partial"))


def test_extras_group_in_the_cli(capsys):
    from o3srl.cli import main

    assert main(["--help"]) == 0
    assert "extras" in capsys.readouterr().out
    assert main(["extras", "--help"]) == 0
    assert "install" in capsys.readouterr().out
