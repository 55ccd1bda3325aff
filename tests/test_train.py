"""The training loop: determinism, checkpoint/resume, policy loading, oracle contract, CLI in process."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from o3srl.algos.cost_model import CostModelConfig
from o3srl.algos.iql import IQLConfig
from o3srl.algos.o3srl import O3SRLConfig
from o3srl.algos.td3bc import TD3BCConfig
from o3srl.config import TrainConfig
from o3srl.logger import read_metrics

TOY = "o3srl.envs.toy:ToyRunEnv"

SMALL_COST_MODEL = CostModelConfig(members=2, hidden=(16, 16), fit_steps=50, batch_size=64, rollout_states=4)
"""The default (adaptive) λ-player's cost model, small: the tests that train O3SRL are about the loop, the command
or the grid, not the model. The CLI's flags (tests/test_cli.py) and a grid's table (tests/test_bench.py) are made
from it by :func:`cost_model_args` and :func:`cost_model_table`."""


def cost_model_table(config: CostModelConfig = SMALL_COST_MODEL) -> dict:
    """``config``'s fields that differ from the default, as a grid file's ``cost_model`` table."""
    default = CostModelConfig()
    return {
        f.name: list(v) if isinstance(v, tuple) else v
        for f in dataclasses.fields(config)
        if (v := getattr(config, f.name)) != getattr(default, f.name)
    }


def cost_model_args(config: CostModelConfig = SMALL_COST_MODEL) -> list[str]:
    """``config``'s fields that differ from the default, as ``o3srl train`` flags."""
    args: list[str] = []
    for name, value in cost_model_table(config).items():
        args += [f"--cost-model.{name.replace('_', '-')}", *map(str, value if isinstance(value, list) else [value])]
    return args


def small_config(dataset, run_dir, **kw) -> TrainConfig:
    base = TrainConfig(
        task="toy",
        env_id=TOY,
        dataset=str(dataset),
        run_dir=str(run_dir),
        steps=400,
        log_every=100,
        checkpoint_every=200,
        eval_episodes=0,
        progress=False,
        td3bc=TD3BCConfig(hidden=(32, 32), batch_size=64),
        iql=IQLConfig(hidden=(32, 32), batch_size=64),
        o3srl=O3SRLConfig(feedback_batch=32),
        cost_model=SMALL_COST_MODEL,
    )
    return dataclasses.replace(base, **kw)


def _rows(run_dir):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in read_metrics(run_dir / "metrics.jsonl")]


def _actions(run_dir):
    import o3srl

    return o3srl.load_policy(run_dir)(np.linspace(0, 1, 7, dtype=np.float32)[:, None])


def test_same_seed_same_numbers(toy_file, tmp_path):
    from o3srl.train import run

    run(small_config(toy_file, tmp_path / "a"))
    run(small_config(toy_file, tmp_path / "b"))
    run(small_config(toy_file, tmp_path / "c", seed=1))
    assert _rows(tmp_path / "a") == _rows(tmp_path / "b")
    np.testing.assert_array_equal(_actions(tmp_path / "a"), _actions(tmp_path / "b"))
    assert _rows(tmp_path / "a") != _rows(tmp_path / "c")


@pytest.mark.parametrize("algo, oracle", [("o3srl", "td3bc"), ("o3srl", "iql")])
def test_killed_run_resumes_to_the_same_result(toy_file, tmp_path, monkeypatch, algo, oracle):
    from o3srl import logger
    from o3srl.train import run

    full = small_config(toy_file, tmp_path / "full", algo=algo, oracle=oracle)
    run(full)

    # Kill the second run while it logs step 300: the last checkpoint is at step 200.
    original = logger.JsonlSink.write

    def dying_write(self, step, metrics):
        if step == 300:
            raise KeyboardInterrupt
        original(self, step, metrics)

    monkeypatch.setattr(logger.JsonlSink, "write", dying_write)
    with pytest.raises(KeyboardInterrupt):
        run(small_config(toy_file, tmp_path / "killed", algo=algo, oracle=oracle))
    assert not (tmp_path / "killed" / "policy.msgpack").exists()
    monkeypatch.setattr(logger.JsonlSink, "write", original)

    run(TrainConfig(), resume_dir=str(tmp_path / "killed"))
    assert _rows(tmp_path / "full") == _rows(tmp_path / "killed")
    np.testing.assert_array_equal(_actions(tmp_path / "full"), _actions(tmp_path / "killed"))

    from flax import serialization

    a = serialization.msgpack_restore((tmp_path / "full" / "checkpoint.msgpack").read_bytes())
    b = serialization.msgpack_restore((tmp_path / "killed" / "checkpoint.msgpack").read_bytes())
    for name in ("full", "killed"):
        with np.load(tmp_path / name / "rounds.npz") as f:
            assert f["round"].tolist() == list(range(1, 41))
            if name == "full":
                trace_full = {k: f[k] for k in f.files}
            else:
                for k in f.files:
                    np.testing.assert_array_equal(f[k], trace_full[k], err_msg=k)
    flat_a = dict(_flatten(a["state"]))
    flat_b = dict(_flatten(b["state"]))
    assert flat_a.keys() == flat_b.keys()
    for key in flat_a:
        np.testing.assert_array_equal(flat_a[key], flat_b[key], err_msg=key)


def _flatten(tree, prefix=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _flatten(v, f"{prefix}/{k}")
    else:
        yield prefix, np.asarray(tree)


@pytest.mark.parametrize("algo", ["td3bc", "iql", "o3srl"])
def test_oracle_contract(toy_file, tmp_path, algo):
    """Finite metrics, actions within the environment's bounds, save → load → identical actions."""
    from o3srl.train import build_learner, load_problem, run

    # O3SRL outputs its last iterate here (the default, mix, is a mixture chosen from its tail), so that the saved
    # policy is the checkpoint's actor.
    o3 = O3SRLConfig(feedback_batch=32, output="last")
    cfg = small_config(toy_file, tmp_path / algo, algo=algo, steps=200, o3srl=o3)
    run(cfg)
    rows = read_metrics(tmp_path / algo / "metrics.jsonl")
    assert rows and all(v is None or np.isfinite(v) for r in rows for v in r.values())
    assert any(k.startswith("loss/critic_cost") for k in rows[-1])
    actions = _actions(tmp_path / algo)
    assert actions.shape == (7, 1) and np.all(np.abs(actions) <= 1.0)
    # The loaded policy acts exactly as the in-memory one.
    from o3srl.checkpoint import load_checkpoint
    from o3srl.policy import Policy

    resolved = cfg.resolved()
    learner = build_learner(resolved, load_problem(resolved))
    import jax

    _, state, stats, _ = load_checkpoint(tmp_path / algo / "checkpoint.msgpack", learner.init(jax.random.PRNGKey(0)))
    mine = Policy(learner.act, state.oracle.actor, stats)(np.linspace(0, 1, 7, dtype=np.float32)[:, None])
    np.testing.assert_array_equal(mine, actions)


def test_fixed_lambda_has_one_arm(toy_file, tmp_path):
    from o3srl.train import run

    summary = run(small_config(toy_file, tmp_path / "f", algo="td3bc", fixed_lambda=2.0, steps=100))
    assert summary["arms"] == [2.0]
    assert all(r["bandit/lambda"] == 2.0 for r in read_metrics(tmp_path / "f" / "metrics.jsonl"))


def test_run_files(toy_file, tmp_path):
    from o3srl.train import run

    run(small_config(toy_file, tmp_path / "r", steps=200))
    d = tmp_path / "r"
    for name in (
        "config.json",
        "run.json",
        "metrics.jsonl",
        "rounds.npz",
        "checkpoint.msgpack",
        "policy.msgpack",
        "eval.json",
        "bandit.png",
    ):
        assert (d / name).exists(), name
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["o3srl"]["num_arms"] == 5 and cfg["td3bc"]["hidden"] == [32, 32]
    info = json.loads((d / "run.json").read_text())
    assert info["reward_reference"] == "dataset" and len(info["dataset_sha256"]) == 64
    row = read_metrics(d / "metrics.jsonl")[-1]
    assert {"bandit/lambda", "bandit/p/0", "bandit/p/4", "feedback/cost_estimate", "loss/actor"} <= row.keys()
    assert abs(sum(row[f"bandit/p/{k}"] for k in range(5)) - 1.0) < 1e-5
    assert not list(d.glob("*.tmp"))


def test_theory_variant_trains_through_the_same_loop(toy_file, tmp_path):
    """The theory variant follows the one training path: it outputs the uniform mixture of its iterates, records
    its λ-player in run.json, draws no bandit plot, and its saved policy is its checkpoint's mixture."""
    import jax

    import o3srl
    from o3srl.algos.o3srl_theory import TheoryConfig
    from o3srl.policy import MixturePolicy
    from o3srl.train import load_finished_run, run

    theory = TheoryConfig(iterations=2, fqe_steps=20, fqe_batch=32, eval_batch=32)
    run(small_config(toy_file, tmp_path / "t", variant="theory", theory=theory))
    d = tmp_path / "t"
    info = json.loads((d / "run.json").read_text())
    assert info["arms"] == [theory.max_lambda] and info["bandit_exploration"] == 0.0
    assert not (d / "bandit.png").exists()
    assert [r["step"] for r in read_metrics(d / "metrics.jsonl")] == [200, 400]  # one row per iteration
    policy = o3srl.load_policy(d)
    assert isinstance(policy, MixturePolicy) and policy.num_members == 2
    finished = load_finished_run(d)
    params, kind = finished.learner.output(finished.state)
    assert kind == "mixture"
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(policy.actor_params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_existing_run_dir_is_not_overwritten(toy_file, tmp_path):
    from o3srl.errors import O3SRLError
    from o3srl.train import run

    run(small_config(toy_file, tmp_path / "r", steps=100))
    with pytest.raises(O3SRLError, match="already holds a run"):
        run(small_config(toy_file, tmp_path / "r", steps=100))


@pytest.mark.parametrize(
    "override, message",
    [
        (dict(steps=105), "multiple of steps_per_round"),
        (dict(cost_limit=-1.0), "cost_limit"),
        (dict(log_every=150), "log_every"),
        (dict(reward_min=1.0), "both reward_min and reward_max"),
    ],
)
def test_bad_config_is_one_clear_error(toy_file, tmp_path, override, message):
    from o3srl.errors import ConfigError
    from o3srl.train import run

    with pytest.raises(ConfigError, match=message):
        run(small_config(toy_file, tmp_path / "x", **override))
    assert not (tmp_path / "x").exists()


def test_dataset_env_mismatch(tmp_path, arrays):
    from o3srl.data import OfflineDataset
    from o3srl.errors import O3SRLError
    from o3srl.train import run

    path = OfflineDataset(arrays).save(tmp_path / "d.hdf5")  # obs dim 3, act dim 2: not the toy task
    with pytest.raises(O3SRLError, match="actions|dim"):
        run(small_config(path, tmp_path / "x"))
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "task", ["OfflineBallRun-v0", "OfflineCarCircle-v0", "OfflineDroneRun-v0", "OfflineAntCircle-v0"]
)
def test_registered_tasks_need_no_simulator_to_train(task, monkeypatch, tmp_path):
    """load_problem takes a registered task's shapes and [−1, 1] bounds from the registry (training machines need no
    simulator); they must be what the simulator itself reports."""
    from o3srl import train
    from o3srl.envs.registry import TASKS

    low, high, obs_dim = train._action_bounds(task)
    spec = TASKS[task]
    assert obs_dim == spec.obs_dim
    np.testing.assert_array_equal(low, -np.ones(spec.act_dim, np.float32))
    np.testing.assert_array_equal(high, np.ones(spec.act_dim, np.float32))
    if task == "OfflineBallRun-v0":
        from o3srl.data import OfflineDataset

        n = 20
        rng = np.random.default_rng(0)
        arrays = {
            "observations": rng.normal(size=(n, spec.obs_dim)),
            "next_observations": rng.normal(size=(n, spec.obs_dim)),
            "actions": rng.uniform(-1, 1, (n, spec.act_dim)),
            "rewards": np.ones(n),
            "costs": np.zeros(n),
            "terminals": np.zeros(n, bool),
            "timeouts": np.arange(n) % 10 == 9,
        }
        path = OfflineDataset(arrays).save(tmp_path / "ballrun.hdf5")

        def no_simulator(env_id):
            raise AssertionError("the simulator was built")

        monkeypatch.setattr(train, "_env_facts", no_simulator)
        problem = train.load_problem(TrainConfig(dataset=str(path)))
        assert problem.dataset.obs_dim == spec.obs_dim and problem.action_low.shape == (spec.act_dim,)
        assert problem.reference == "dsrl" and problem.episode_length == spec.max_episode_steps
