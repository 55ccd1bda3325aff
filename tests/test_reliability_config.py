"""Bad numbers and options: each ends in one ``error:`` line naming the field and its range, exit status 2, before
anything is trained or written (command line, Python API, grid files, the other commands' options)."""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest

from o3srl.cli import main
from o3srl.config import TrainConfig, apply_overrides
from o3srl.errors import ConfigError

TOY = ["--task", "toy", "--env-id", "o3srl.envs.toy:ToyRunEnv", "--no-progress", "--eval-episodes", "0"]


def _one_error(capsys, code: int) -> str:
    assert code == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


# The cases and their neighbours: flag → the message's start.
CLI_CASES = [
    (["--cost-limit", "nan"], "cost_limit must be a finite number ≥ 0, got nan"),
    (["--cost-limit", "inf"], "cost_limit must be a finite number ≥ 0, got inf"),
    (["--cost-limit", "-1"], "cost_limit must be a finite number ≥ 0, got -1.0"),
    (["--td3bc.batch-size", "0"], "td3bc.batch_size must be an integer ≥ 1, got 0"),
    (["--iql.batch-size", "-3"], "iql.batch_size must be an integer ≥ 1, got -3"),
    (["--o3srl.steps-per-round", "0"], "o3srl.steps_per_round must be an integer ≥ 1, got 0"),
    (["--checkpoint-every", "0"], "checkpoint_every must be an integer ≥ 1, got 0"),
    (["--log-every", "0"], "log_every must be an integer ≥ 1, got 0"),
    (["--o3srl.max-lambda=-1"], "o3srl.max_lambda must be a finite number ≥ 0, got -1.0"),
    (["--o3srl.max-lambda", "inf"], "o3srl.max_lambda must be a finite number ≥ 0, got inf"),
    (["--o3srl.num-arms", "0"], "o3srl.num_arms must be an integer ≥ 1, got 0"),
    (["--o3srl.arms", "0", "nan"], "o3srl.arms[1] must be a finite number ≥ 0, got nan"),
    (["--o3srl.exploration", "1.5"], "o3srl.exploration must be a finite number in [0, 1], got 1.5"),
    (["--o3srl.learning-rate", "0"], "o3srl.learning_rate must be a finite number > 0, got 0.0"),
    (["--o3srl.feedback-batch", "0"], "o3srl.feedback_batch must be an integer ≥ 1, got 0"),
    (["--o3srl.min-scale", "0"], "o3srl.min_scale must be a finite number > 0, got 0.0"),
    (["--td3bc.gamma", "1.0"], "td3bc.gamma must be a finite number in [0, 1), got 1.0"),
    (["--td3bc.gamma=-0.1"], "td3bc.gamma must be a finite number in [0, 1), got -0.1"),
    (["--td3bc.tau", "0"], "td3bc.tau must be a finite number in (0, 1], got 0.0"),
    (["--td3bc.actor-lr", "nan"], "td3bc.actor_lr must be a finite number > 0, got nan"),
    (["--td3bc.policy-delay", "0"], "td3bc.policy_delay must be an integer ≥ 1, got 0"),
    (["--td3bc.hidden", "32", "0"], "td3bc.hidden[1] must be an integer ≥ 1, got 0"),
    (["--td3bc.cost-scale", "0"], "td3bc.cost_scale must be a finite number > 0, got 0.0"),
    (["--iql.expectile", "1.0"], "iql.expectile must be a finite number in (0, 1), got 1.0"),
    (["--iql.temperature", "inf"], "iql.temperature must be a finite number ≥ 0, got inf"),
    (["--episode-length=-5"], "episode_length must be an integer ≥ 1, got -5"),
    (["--fixed-lambda", "nan"], "fixed_lambda must be a finite number ≥ 0, got nan"),
    (["--seed=-1"], "seed must be an integer in [0, 4294967295], got -1"),
    (["--seed", "4294967296"], "seed must be an integer in [0, 4294967295], got 4294967296"),
    (["--eval-envs", "0"], "eval_envs must be an integer ≥ 1, got 0"),
    (["--eval-episodes=-1"], "eval_episodes must be an integer ≥ 0, got -1"),
    (["--steps", "0"], "steps must be an integer ≥ 1, got 0"),
    (["--reward-min", "nan", "--reward-max", "1"], "reward_min must be a finite number, got nan"),
    (["--reward-min", "5", "--reward-max", "1"], "reward_max (1.0) must exceed reward_min (5.0)"),
    (["--steps", "105"], "steps (105) must be a multiple of steps_per_round M (10)"),
    (["--checkpoint-every", "150", "--log-every", "100"], "checkpoint_every (150) must be a multiple of log_every"),
    (
        ["--variant", "theory", "--theory.initial-lambda", "9"],
        "theory.initial_lambda (9.0) must lie in [0, theory.max_lambda]",
    ),
    (["--variant", "theory", "--theory.iterations", "0"], "theory.iterations must be an integer ≥ 1, got 0"),
    (["--variant", "theory", "--theory.fqe-lr", "0"], "theory.fqe_lr must be a finite number > 0, got 0.0"),
]


@pytest.mark.parametrize("flags, message", CLI_CASES, ids=[" ".join(f) for f, _ in CLI_CASES])
def test_bad_number_on_the_command_line(flags, message, capsys, tmp_path):
    # No --dataset: the check must come before the dataset (or anything else) is looked at.
    err = _one_error(capsys, main(["train", *TOY, *flags, "--run-dir", str(tmp_path / "run")]))
    assert err == f"error: {message}" or err.startswith(f"error: {message}"), err
    assert not (tmp_path / "run").exists()


def _numeric_fields(cls: type = TrainConfig, prefix: str = "") -> list[tuple[str, type]]:
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += _numeric_fields(tp, f"{prefix}{f.name}.")
            continue
        args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
        if len(args) == 1 and args[0] in (int, float):
            out.append((prefix + f.name, args[0]))
    return out


NUMERIC = _numeric_fields()


@pytest.mark.parametrize("name, tp", NUMERIC, ids=[n for n, _ in NUMERIC])
def test_every_numeric_field_refuses_non_finite_values(name, tp):
    """Every number of every config (fields added later included) is checked: NaN and ±inf never pass, and an
    integer field takes no fraction."""
    cfg = TrainConfig()
    for bad in (math.nan, math.inf, -math.inf) + ((2.5,) if tp is int else ()):
        with pytest.raises(ConfigError) as exc:
            apply_overrides(cfg, {name: bad}).resolved()
        assert str(exc.value).startswith(f"{name} must be "), str(exc.value)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"algo": "ppo"},
            "algo must be one of 'o3srl', 'td3bc', 'iql', 'bc-all', 'bc-safe', 'bcq-lag', 'bear-lag', 'cpq', "
            "'coptidice', 'cdt', 'fisor', 'caps', 'ccac', got 'ppo'",
        ),
        ({"o3srl.bandit": "ucb"}, "o3srl.bandit must be one of"),
        ({"steps": "100"}, "steps must be an integer ≥ 1, got '100'"),
        ({"normalize_obs": 1}, "normalize_obs must be true or false, got 1"),
        ({"task": ""}, "task must be a non-empty string"),
        ({"td3bc.hidden": 32}, "td3bc.hidden must be a list, got 32"),
    ],
)
def test_wrong_types_from_python_or_files(overrides, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        apply_overrides(TrainConfig(), overrides).resolved()


def test_grid_file_numbers_are_checked(tmp_path):
    from o3srl.grid import load_grid

    grid = tmp_path / "g.toml"
    grid.write_text(
        'tasks = ["OfflineBallRun-v0"]\ncost_limits = [5]\nseeds = [0]\n[algorithms.o3srl]\n"td3bc.gamma" = 1.0\n'
    )
    with pytest.raises(ConfigError, match=r"cell .*: td3bc.gamma must be a finite number in \[0, 1\), got 1.0"):
        load_grid(grid)
    grid.write_text('tasks = ["OfflineBallRun-v0"]\ncost_limits = [nan]\nseeds = [0]\n[algorithms.o3srl]\n')
    with pytest.raises(ConfigError, match="cost_limits must be finite"):
        load_grid(grid)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--cost-limit=-1"], "--cost-limit must be a finite number ≥ 0, got -1.0"),
        (["--cost-limit", "nan"], "--cost-limit must be a finite number ≥ 0, got nan"),
        (["--episodes", "0"], "--episodes must be an integer ≥ 1, got 0"),
        (["--envs", "0"], "--envs must be an integer ≥ 1, got 0"),
        (["--seed=-1"], "--seed must be an integer in [0, 4294967295], got -1"),
    ],
)
def test_eval_options_are_checked_before_anything_runs(args, message, capsys, tmp_path):
    err = _one_error(capsys, main(["eval", str(tmp_path), *args]))
    assert err == f"error: {message}"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--cost-limits", "nan"], "--cost-limits (each) must be a finite number ≥ 0, got nan"),
        (["--cost-limits", "5", "-1"], "--cost-limits (each) must be a finite number ≥ 0, got -1.0"),
        (["--cost-limits", "inf"], "--cost-limits (each) must be a finite number ≥ 0, got inf"),
    ],
)
def test_data_info_cost_limits(args, message, capsys, toy_file):
    err = _one_error(capsys, main(["data", "info", str(toy_file), *args]))
    assert err == f"error: {message}"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--switch-prob", "2"], "switch_prob must be a finite number in [0, 1], got 2.0"),
        (["--noise-max", "nan"], "noise_max must be a finite number ≥ 0, got nan"),
        (["--episodes", "0"], "episodes must be an integer ≥ 1, got 0"),
        (["--seed=-1"], "seed must be an integer in [0, 4294967295], got -1"),
        (["--workers", "0"], "workers must be an integer ≥ 1, got 0"),
    ],
)
def test_data_make_options(args, message, capsys, tmp_path):
    out = tmp_path / "d.hdf5"
    err = _one_error(capsys, main(["data", "make", "OfflineBallRun-v0", "--out", str(out), "--quiet", *args]))
    assert err == f"error: {message}"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--workers", "0"], "--workers must be an integer ≥ 1, got 0"),
        (["--steps", "0"], "--steps must be an integer ≥ 1, got 0"),
        (["--cost-limits", "nan"], "--cost-limits (each) must be a finite number ≥ 0, got nan"),
    ],
)
def test_train_behaviour_options(args, message, capsys, tmp_path):
    err = _one_error(
        capsys, main(["data", "train-behaviour", "OfflineBallRun-v0", "--out", str(tmp_path / "z"), *args])
    )
    assert err == f"error: {message}"
    assert not (tmp_path / "z").exists()
