"""Data that is wrong but looks valid is named in one error; unwritable data directories fail before any
generation; two files can be compared up to floating-point noise."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from o3srl.cli import main
from o3srl.data import OfflineDataset
from o3srl.data.dataset import DatasetError
from o3srl.errors import O3SRLError

sys.path.insert(0, os.path.dirname(__file__))
from test_train import small_config


def _one_error(capsys, code: int) -> str:
    assert code == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def test_negative_costs_are_rejected(arrays):
    arrays["costs"][4] = -2.0
    arrays["costs"][7] = -1.0
    with pytest.raises(
        DatasetError, match=r"costs has 2 negative value\(s\), first at row 4 \(-2\); costs must be ≥ 0"
    ):
        OfflineDataset(arrays)


def test_negative_costs_in_a_file(arrays, tmp_path, capsys):
    path = tmp_path / "neg.npz"
    np.savez(path, **{**arrays, "costs": arrays["costs"] - 1.0})
    err = _one_error(capsys, main(["data", "info", str(path)]))
    assert f"dataset {path}: costs has 6 negative value(s), first at row 0 (-1)" in err
    err = _one_error(
        capsys,
        main(
            [
                "train",
                "--task",
                "t",
                "--env-id",
                "o3srl.envs.toy:ToyRunEnv",
                "--dataset",
                str(path),
                "--run-dir",
                str(tmp_path / "run"),
                "--no-progress",
            ]
        ),
    )
    assert "negative value(s)" in err
    assert not (tmp_path / "run").exists()


def _toy_arrays(episodes: int, length: int) -> dict[str, np.ndarray]:
    from o3srl.envs.toy import toy_dataset

    arrays = toy_dataset(episodes * length // 20, seed=0)
    arrays["timeouts"] = np.zeros_like(arrays["timeouts"])
    arrays["timeouts"][length - 1 :: length] = True
    return arrays


def test_one_endless_episode_is_reported(tmp_path, capsys):
    """No boundary but the last row: one episode of 2,400 steps. Training refuses it; data info notes it."""
    path = OfflineDataset(_toy_arrays(1, 2400)).save(tmp_path / "endless.hdf5")
    err = _one_error(
        capsys,
        main(
            [
                "train",
                "--task",
                "t",
                "--env-id",
                "o3srl.envs.toy:ToyRunEnv",
                "--dataset",
                str(path),
                "--run-dir",
                str(tmp_path / "run"),
                "--no-progress",
            ]
        ),
    )
    assert "all 2400 transitions form one single episode (no boundary but the last row)" in err
    assert "mark the last transition of every episode in timeouts" in err
    assert not (tmp_path / "run").exists()
    assert main(["data", "info", str(path), "--json-out"]) == 0
    assert "one single episode; are its episode boundaries" in capsys.readouterr().err


def test_episodes_longer_than_the_time_limit(tmp_path):
    """A registered task knows its time limit (OfflineBallRun-v0: 100 steps); longer episodes mean lost boundaries.
    Checked from the registry alone, so no simulator is built."""
    from o3srl.config import TrainConfig
    from o3srl.envs.registry import TASKS
    from o3srl.train import load_problem

    spec = TASKS["OfflineBallRun-v0"]
    n = 450
    rng = np.random.default_rng(0)
    arrays = {
        "observations": rng.normal(size=(n, spec.obs_dim)),
        "next_observations": rng.normal(size=(n, spec.obs_dim)),
        "actions": rng.uniform(-1, 1, (n, spec.act_dim)),
        "rewards": np.ones(n),
        "costs": np.zeros(n),
        "terminals": np.zeros(n, bool),
        "timeouts": np.isin(np.arange(n), [99, 199, 449]),
    }
    path = OfflineDataset(arrays).save(tmp_path / "ballrun.hdf5")
    with pytest.raises(
        DatasetError,
        match=r"1 episode\(s\) are longer than the environment's time limit of 100 steps "
        r"\(first: episode 2, rows 200–449, 250 steps\)",
    ):
        load_problem(TrainConfig(dataset=str(path)))


def test_custom_env_time_limit_from_its_spec(tmp_path, monkeypatch):
    """An environment made by gymnasium carries its time limit; the data's episodes must fit in it."""
    from o3srl import train
    from o3srl.config import TrainConfig

    path = OfflineDataset(_toy_arrays(3, 40)).save(tmp_path / "long.hdf5")
    monkeypatch.setattr(
        train, "_env_facts", lambda env_id: (np.array([-1.0], np.float32), np.array([1.0], np.float32), 1, 20)
    )
    with pytest.raises(DatasetError, match="longer than the environment's time limit of 20 steps"):
        train.load_problem(TrainConfig(task="t", env_id="Corridor-v0", dataset=str(path)))


def test_data_make_checks_the_output_directory_first(tmp_path, monkeypatch):
    """An output directory under a file fails at once, before the zoo is loaded or any episode is played."""
    from o3srl.behaviour import make

    def no_collection(*args, **kwargs):
        raise AssertionError("collection started")

    monkeypatch.setattr("o3srl.behaviour.zoo.load_zoo", no_collection)
    (tmp_path / "plain").write_text("x")
    with pytest.raises(
        O3SRLError, match=r"dataset output .*: cannot write to directory .*plain/sub \(Not a directory\)"
    ):
        make.make_dataset(
            make.MakeConfig(task="OfflineBallRun-v0"), tmp_path / "plain" / "sub" / "d.hdf5", progress=False
        )


def test_default_dataset_checks_the_data_directory_first(tmp_path, monkeypatch, capsys):
    from o3srl.behaviour import scripted as generate

    def no_generation(*args, **kwargs):
        raise AssertionError("generation started")

    monkeypatch.setattr(generate, "make_default_dataset", no_generation)
    (tmp_path / "plain").write_text("x")
    monkeypatch.setenv("O3SRL_DATA_DIR", str(tmp_path / "plain" / "datasets"))
    err = _one_error(capsys, main(["train", "--run-dir", str(tmp_path / "run"), "--no-progress"]))
    assert "the data directory ($O3SRL_DATA_DIR or ~/.cache/o3srl/datasets): cannot write to directory" in err
    assert not (tmp_path / "run").exists()


def test_unwritable_data_directory(tmp_path, monkeypatch):
    """As root no directory is unwritable, so the refusal is simulated where the probe file is created."""
    import errno

    from o3srl import io
    from o3srl.behaviour import scripted as generate

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(io.tempfile, "mkstemp", refuse)
    with pytest.raises(O3SRLError, match=r"cannot write to directory .* \(Permission denied\)"):
        generate.default_dataset(tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []


def test_plot_into_an_unwritable_place(toy_file, tmp_path, capsys):
    (tmp_path / "plain").write_text("x")
    err = _one_error(capsys, main(["data", "info", str(toy_file), "--plot", str(tmp_path / "plain" / "s.png")]))
    assert err.startswith(f"error: --plot {tmp_path / 'plain' / 's.png'}: cannot write to directory")
    assert err.endswith("(it is a file, not a directory)")


@pytest.mark.parametrize(
    "change, code, expect",
    [
        (lambda a: None, 0, "identical files"),
        (lambda a: a["rewards"].__imul__(np.float32(1 + 3e-7)), 0, "same data within rtol"),
        (lambda a: a["rewards"].__iadd__(np.float32(0.5)), 1, "different data: rewards differ beyond"),
        (lambda a: a["timeouts"].__setitem__(slice(19, 40), False), 1, "different data: timeouts differs"),
    ],
)
def test_data_compare(toy_file, tmp_path, capsys, change, code, expect):
    import shutil

    other = tmp_path / "other.hdf5"
    arrays = dict(OfflineDataset.load(toy_file).arrays)
    arrays = {k: v.copy() for k, v in arrays.items()}
    change(arrays)
    if code == 0 and "identical" in expect:
        shutil.copy(toy_file, other)
    else:
        arrays["timeouts"][-1] = True
        OfflineDataset(arrays).save(other)
    assert main(["data", "compare", str(toy_file), str(other)]) == code
    assert expect in capsys.readouterr().out


def test_data_compare_options(toy_file, capsys):
    err = _one_error(capsys, main(["data", "compare", str(toy_file), str(toy_file), "--rtol", "nan"]))
    assert err == "error: --rtol must be a finite number ≥ 0, got nan"


def test_training_data_with_every_value_checked_still_trains(toy_file, tmp_path):
    """The checks do not refuse ordinary data: a valid toy dataset trains and resumes as before."""
    from o3srl.train import run

    summary = run(small_config(toy_file, tmp_path / "r", steps=100))
    assert summary["episode_length"] == 20
