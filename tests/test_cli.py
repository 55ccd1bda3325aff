"""The ``o3srl`` command, called in process."""

from __future__ import annotations

import json

import pytest
from tests.test_train import cost_model_args

from o3srl.cli import main

# The default (adaptive) λ-player's cost model, small (tests/test_train.py).
SMALL_COST_MODEL_ARGS = cost_model_args()

TOY_ARGS = [
    "--task",
    "toy",
    "--env-id",
    "o3srl.envs.toy:ToyRunEnv",
    "--td3bc.hidden",
    "32",
    "32",
    "--td3bc.batch-size",
    "64",
    "--o3srl.feedback-batch",
    "32",
    *SMALL_COST_MODEL_ARGS,
    "--no-progress",
]


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("train", "eval", "data"):
        assert name in out


def test_unknown_command(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_train_help_comes_from_the_config(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--cost-limit",
        "--o3srl.num-arms",
        "--o3srl.feedback",
        "--td3bc.alpha",
        "--iql.expectile",
        "--resume",
    ):
        assert flag in out


def test_train_then_resume_finished_run(toy_file, tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = [
        "train",
        *TOY_ARGS,
        "--dataset",
        str(toy_file),
        "--steps",
        "200",
        "--log-every",
        "100",
        "--checkpoint-every",
        "100",
        "--eval-episodes",
        "0",
        "--run-dir",
        str(run_dir),
        "--cost-limit",
        "3",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "run directory" in out and str(run_dir) in out
    assert json.loads((run_dir / "config.json").read_text())["cost_limit"] == 3.0
    # Resuming a finished run trains no further and reports again.
    assert main(["train", "--resume", str(run_dir)]) == 0
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2


def test_presets_fill_defaults_and_flags_win(monkeypatch):
    from o3srl import config
    from o3srl.train import TrainArgs, _task_from_argv

    monkeypatch.setitem(config.PRESETS, "toy", {"steps": 300, "o3srl.num_arms": 3})
    import tyro

    argv = ["--task", "toy", "--o3srl.num-arms", "7"]
    args = tyro.cli(TrainArgs, default=TrainArgs(cfg=config.preset(_task_from_argv(argv))), args=argv)
    assert args.cfg.steps == 300 and args.cfg.o3srl.num_arms == 7


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--task", "Nope-v0"], "unknown task or environment 'Nope-v0'"),
        (["--cost-limit", "-2"], "cost_limit must be"),
        (["--task", "toy", "--env-id", "o3srl.envs.toy:ToyRunEnv", "--dataset", "/nonexistent.hdf5"], "does not exist"),
        (["--task", "toy", "--env-id", "o3srl.envs.toy:ToyRunEnv"], "no dataset given for task 'toy'"),
    ],
)
def test_bad_input_is_one_clear_error(extra, message, capsys, tmp_path):
    assert main(["train", *extra, "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_resume_of_a_non_run_directory(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_eval_command_and_load_policy(toy_file, tmp_path, capsys):
    import numpy as np

    import o3srl

    run_dir = tmp_path / "run"
    assert (
        main(
            [
                "train",
                *TOY_ARGS,
                "--dataset",
                str(toy_file),
                "--steps",
                "100",
                "--log-every",
                "100",
                "--checkpoint-every",
                "100",
                "--eval-episodes",
                "2",
                "--run-dir",
                str(run_dir),
            ]
        )
        == 0
    )
    first = capsys.readouterr().out
    assert "normalized reward uses the dataset's own min/max" in first
    assert main(["eval", str(run_dir), "--episodes", "2", "--cost-limit", "1"]) == 0
    out = capsys.readouterr().out
    assert "κ = 1" in out and "safe" in out
    policy = o3srl.load_policy(run_dir)
    assert policy(np.zeros(1, np.float32)).shape == (1,)
    assert main(["eval", str(tmp_path)]) == 2


def test_train_behaviour_continue_errors(tmp_path, capsys):
    assert main(["data", "train-behaviour", "OfflineBallRun-v0", "--continue"]) == 2
    assert "--continue needs --steps" in capsys.readouterr().err
    assert (
        main(["data", "train-behaviour", "OfflineBallRun-v0", "--continue", "--steps", "4096", "--out", str(tmp_path)])
        == 2
    )
    err = capsys.readouterr().err
    assert "cannot continue ppolag-k5" in err and "no such member" in err
    assert not (tmp_path / "OfflineBallRun-v0" / "manifest.json").exists()  # nothing written
    assert (
        main(
            [
                "data",
                "train-behaviour",
                "OfflineBallRun-v0",
                "--continue",
                "--steps",
                "4096",
                "--init-from",
                "ppolag-k5",
            ]
        )
        == 2
    )
    assert "exclude each other" in capsys.readouterr().err
