"""Run directories: resume and eval refuse what changed, a run directory cannot make o3srl import code, a real
``kill -9`` resumes bit-identically (torn metrics line included), training stops on NaN with the last good
checkpoint intact, and file-system faults end in one clear error."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from flax import serialization

from o3srl.cli import main
from o3srl.config import TrainConfig
from o3srl.errors import O3SRLError
from o3srl.logger import read_metrics

sys.path.insert(0, os.path.dirname(__file__))
from test_cli import SMALL_COST_MODEL_ARGS
from test_train import small_config


def _one_error(capsys, code: int) -> str:
    assert code == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip() and not line.startswith("note: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def _snapshot(run_dir):
    """Every file of a run directory with its bytes: to show that a refused command wrote nothing."""
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}


def _rows(run_dir):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in read_metrics(run_dir / "metrics.jsonl")]


def _actions(run_dir):
    import o3srl

    return o3srl.load_policy(run_dir)(np.linspace(0, 1, 7, dtype=np.float32)[:, None])


def _flatten(tree, prefix=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _flatten(v, f"{prefix}/{k}")
    else:
        yield prefix, np.asarray(tree)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished 200-step run (checkpoints at 100 and 200) and the dataset it was trained on."""
    from o3srl.data import OfflineDataset
    from o3srl.envs.toy import toy_dataset
    from o3srl.train import run

    root = tmp_path_factory.mktemp("finished")
    data = root / "toy.hdf5"
    OfflineDataset(toy_dataset(120, seed=0, low=0.2)).save(data)
    run(small_config(data, root / "run", steps=200, log_every=100, checkpoint_every=100))
    return root / "run", data


@pytest.fixture
def run_copy(finished, tmp_path):
    """A private copy of the finished run and of its dataset (the copy's config points at the copied dataset)."""
    import shutil

    run_dir, data = finished
    shutil.copy(data, tmp_path / "toy.hdf5")
    shutil.copytree(run_dir, tmp_path / "run")
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    cfg["dataset"] = str(tmp_path / "toy.hdf5")
    config_json = json.dumps(cfg, indent=2, sort_keys=True)
    (tmp_path / "run" / "config.json").write_text(config_json + "\n")
    for name in ("checkpoint.msgpack", "policy.msgpack"):
        path = tmp_path / "run" / name
        payload = serialization.msgpack_restore(path.read_bytes())
        payload["config"] = config_json
        path.write_bytes(serialization.msgpack_serialize(payload))
    return tmp_path / "run"


# ------------------------------------------------------------------------------------------------ resume / eval
def test_resume_refuses_a_changed_dataset(run_copy, capsys):
    from o3srl.data import OfflineDataset
    from o3srl.envs.toy import toy_dataset

    data = run_copy.parent / "toy.hdf5"
    OfflineDataset(toy_dataset(120, seed=1, low=0.2)).save(data)  # same shape, other numbers
    before = _snapshot(run_copy)
    err = _one_error(capsys, main(["train", "--resume", str(run_copy)]))
    assert "has changed since the run started" in err and "restore the file" in err
    assert _snapshot(run_copy) == before


def test_resume_refuses_an_edited_config(run_copy, capsys):
    cfg = json.loads((run_copy / "config.json").read_text())
    cfg["td3bc"]["hidden"] = [64, 64]
    (run_copy / "config.json").write_text(json.dumps(cfg))
    before = _snapshot(run_copy)
    err = _one_error(capsys, main(["train", "--resume", str(run_copy)]))
    assert "config.json differs from the config the checkpoint was saved with" in err
    assert "td3bc.hidden: [32, 32] in the checkpoint, [64, 64] in config.json" in err
    assert _snapshot(run_copy) == before


def test_checkpoint_whose_network_shapes_differ(run_copy):
    """Both config.json and the checkpoint's config edited: the arrays themselves are compared with the networks."""
    import jax

    from o3srl.checkpoint import CheckpointError, load_checkpoint
    from o3srl.train import build_learner, load_problem

    cfg = dataclasses.replace(
        small_config(run_copy.parent / "toy.hdf5", run_copy),
        td3bc=dataclasses.replace(TrainConfig().td3bc, hidden=(16, 32), batch_size=64),
    )
    learner = build_learner(cfg.resolved(), load_problem(cfg.resolved()))
    with pytest.raises(
        CheckpointError,
        match=r"does not match the run's networks: oracle/actor/params/\S*Dense_0/"
        r"\S+ has shape \(\S*32,\) \(float32\) but the config gives \(\S*16,\)",
    ):
        load_checkpoint(run_copy / "checkpoint.msgpack", learner.init(jax.random.PRNGKey(0)))


def test_eval_refuses_a_policy_whose_shapes_were_edited(run_copy, capsys):
    path = run_copy / "policy.msgpack"
    payload = serialization.msgpack_restore(path.read_bytes())
    cfg = json.loads(payload["config"])
    cfg["td3bc"]["hidden"] = [64, 64]
    payload["config"] = json.dumps(cfg)
    path.write_bytes(serialization.msgpack_serialize(payload))
    err = _one_error(capsys, main(["eval", str(run_copy), "--episodes", "1"]))
    assert "does not match the actor of the config saved with it" in err and "has shape" in err


def test_eval_refuses_an_edited_config_json(run_copy, capsys):
    cfg = json.loads((run_copy / "config.json").read_text())
    cfg["td3bc"]["hidden"] = [64, 64]
    (run_copy / "config.json").write_text(json.dumps(cfg))
    err = _one_error(capsys, main(["eval", str(run_copy), "--episodes", "1"]))
    assert "config.json differs from the config saved with its policy" in err


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"steps": 200,', "is not valid JSON"),
        ("[1, 2]", "a config must be a JSON object of fields, got list"),
        ('{"td3bc": 3}', "td3bc must be a section"),
        ('{"stepz": 3}', "unknown config field 'stepz'"),
        ('{"cost_limit": NaN}', "cost_limit must be a finite number ≥ 0, got nan"),
        ('{"steps": "200"}', "steps must be an integer ≥ 1, got '200'"),
    ],
)
@pytest.mark.parametrize("command", ["train", "eval"])
def test_malformed_config_json(run_copy, capsys, text, message, command):
    (run_copy / "config.json").write_text(text)
    before = _snapshot(run_copy)
    argv = ["train", "--resume", str(run_copy)] if command == "train" else ["eval", str(run_copy)]
    err = _one_error(capsys, main(argv))
    assert str(run_copy / "config.json") in err and message in err, err
    assert _snapshot(run_copy) == before


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda info: "{", "run.json cannot be read"),
        (lambda info: json.dumps({**info, "reward_range": [1, "x"]}), "reward_range must be two finite numbers"),
        (lambda info: json.dumps({**info, "env_id": 3}), "env_id must be a non-empty string"),
    ],
)
def test_malformed_run_json_at_eval(run_copy, capsys, edit, message):
    info = json.loads((run_copy / "run.json").read_text())
    (run_copy / "run.json").write_text(edit(info))
    err = _one_error(capsys, main(["eval", str(run_copy)]))
    assert message in err


def test_damaged_checkpoint_on_resume(run_copy, capsys):
    (run_copy / "checkpoint.msgpack").write_bytes(b"\x00garbage")
    before = _snapshot(run_copy)
    err = _one_error(capsys, main(["train", "--resume", str(run_copy)]))
    assert "cannot be read" in err
    assert _snapshot(run_copy) == before


# ------------------------------------------------------------------------------------------------ no code from data
@pytest.fixture
def hostile_module(tmp_path, monkeypatch):
    """An importable module that leaves a marker file when imported (what a stranger's entry point could do)."""
    marker = tmp_path / "imported.txt"
    (tmp_path / "stranger_env.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\nfrom o3srl.envs.toy import ToyRunEnv as Env\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("stranger_env", None)
    yield marker
    sys.modules.pop("stranger_env", None)


def test_eval_does_not_import_an_entry_point_named_by_the_run(run_copy, hostile_module, capsys):
    info = json.loads((run_copy / "run.json").read_text())
    (run_copy / "run.json").write_text(json.dumps({**info, "env_id": "stranger_env:Env"}))
    err = _one_error(capsys, main(["eval", str(run_copy), "--episodes", "1"]))
    assert "names the environment entry point 'stranger_env:Env'" in err and "--env-id stranger_env:Env" in err
    assert not hostile_module.exists()
    # Named on the command line, it is the user's own choice.
    assert main(["eval", str(run_copy), "--episodes", "1", "--env-id", "stranger_env:Env"]) == 0
    assert hostile_module.exists()


def test_resume_does_not_import_an_entry_point_named_by_the_run(run_copy, hostile_module, capsys):
    cfg = json.loads((run_copy / "config.json").read_text())
    cfg["env_id"] = "stranger_env:Env"
    (run_copy / "config.json").write_text(json.dumps(cfg))
    before = _snapshot(run_copy)
    err = _one_error(capsys, main(["train", "--resume", str(run_copy)]))
    assert "names the environment entry point 'stranger_env:Env'" in err
    assert not hostile_module.exists()
    assert _snapshot(run_copy) == before


# ------------------------------------------------------------------------------------------------ custom environments
def test_env_id_without_task_is_its_own_task(toy_file, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert (
        main(
            [
                "train",
                "--env-id",
                "o3srl.envs.toy:ToyRunEnv",
                "--dataset",
                str(toy_file),
                "--steps",
                "100",
                "--log-every",
                "100",
                "--checkpoint-every",
                "100",
                "--eval-episodes",
                "0",
                "--no-progress",
                "--td3bc.hidden",
                "32",
                "32",
                "--td3bc.batch-size",
                "64",
                *SMALL_COST_MODEL_ARGS,
            ]
        )
        == 0
    )
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("ToyRunEnv-o3srl-k5-s0-")
    cfg = json.loads((run_dir / "config.json").read_text())
    info = json.loads((run_dir / "run.json").read_text())
    assert cfg["task"] == "ToyRunEnv"
    assert info["episode_length"] == 20 and info["reward_reference"] == "dataset"  # not OfflineBallRun-v0's 100


def test_gymnasium_module_colon_id_form(toy_file, tmp_path, monkeypatch):
    """``module:EnvId``: import the module (which registers the id), then make the id; T from its time limit."""
    import gymnasium

    (tmp_path / "register_corridor.py").write_text(
        textwrap.dedent("""
        import gymnasium
        from o3srl.envs.toy import ToyRunEnv

        class Corridor(ToyRunEnv, gymnasium.Env):
            pass

        if "Corridor-v0" not in gymnasium.envs.registry:
            gymnasium.register("Corridor-v0", entry_point=Corridor, max_episode_steps=20, disable_env_checker=True)
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from o3srl.envs import make_env
    from o3srl.train import env_task_name, run

    try:
        env = make_env("register_corridor:Corridor-v0")
        assert env.spec.max_episode_steps == 20
        assert env_task_name("register_corridor:Corridor-v0") == "Corridor-v0"
        cfg = small_config(
            toy_file, tmp_path / "r", task="Corridor-v0", env_id="register_corridor:Corridor-v0", steps=100
        )
        assert run(cfg)["episode_length"] == 20
    finally:
        gymnasium.envs.registry.pop("Corridor-v0", None)
        sys.modules.pop("register_corridor", None)


# ------------------------------------------------------------------------------------------------ kill -9, torn lines
KILLER = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from o3srl import logger
from o3srl.train import run
from test_train import small_config

original = logger.JsonlSink.write

def write_then_die(self, step, metrics):
    original(self, step, metrics)
    if step == 300:  # checkpoint at 200; the row of step 300 is on disk
        self._file.write('{{"step": 4')  # a row cut short by the kill
        self._file.flush()
        os.kill(os.getpid(), signal.SIGKILL)

logger.JsonlSink.write = write_then_die
run(small_config({data!r}, {run_dir!r}))
"""


def test_kill_9_then_resume_is_bit_identical(toy_file, tmp_path, capsys):
    from o3srl.train import run

    run(small_config(toy_file, tmp_path / "full"))
    script = KILLER.format(tests=os.path.dirname(__file__), data=str(toy_file), run_dir=str(tmp_path / "killed"))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    killed = tmp_path / "killed"
    assert not (killed / "policy.msgpack").exists()
    assert (killed / "metrics.jsonl").read_text().endswith('{"step": 4')

    run(TrainConfig(), resume_dir=str(killed))
    assert "dropped its last line, which is incomplete" in capsys.readouterr().err
    assert _rows(tmp_path / "full") == _rows(killed)
    np.testing.assert_array_equal(_actions(tmp_path / "full"), _actions(killed))
    a = serialization.msgpack_restore((tmp_path / "full" / "checkpoint.msgpack").read_bytes())
    b = serialization.msgpack_restore((killed / "checkpoint.msgpack").read_bytes())
    flat_a, flat_b = dict(_flatten(a["state"])), dict(_flatten(b["state"]))
    assert flat_a.keys() == flat_b.keys()
    for key in flat_a:
        np.testing.assert_array_equal(flat_a[key], flat_b[key], err_msg=key)
    assert not list(killed.glob(".*.tmp"))


def test_a_damaged_metrics_line_before_the_last_is_an_error(run_copy, capsys):
    lines = (run_copy / "metrics.jsonl").read_text().splitlines()
    (run_copy / "metrics.jsonl").write_text("\n".join(["{oops", *lines]) + "\n")
    err = _one_error(capsys, main(["train", "--resume", str(run_copy)]))
    assert "line 1 is not a metrics row" in err


# ------------------------------------------------------------------------------------------------ NaN guard
def test_divergence_stops_the_run_naming_step_and_quantity(tmp_path):
    from o3srl.data import OfflineDataset
    from o3srl.envs.toy import toy_dataset
    from o3srl.train import TrainingDiverged, run

    arrays = toy_dataset(60, seed=0)
    arrays["rewards"] = arrays["rewards"] * 1e30  # finite, but its squares are not in float32
    OfflineDataset(arrays).save(tmp_path / "huge.hdf5")
    with pytest.raises(
        TrainingDiverged,
        match=r"training diverged in steps 1–100: parameter \S+ .*is not finite "
        r".*no checkpoint was written.*largest \|reward\| 1e\+30",
    ):
        run(small_config(tmp_path / "huge.hdf5", tmp_path / "r", steps=200, checkpoint_every=100))
    assert not (tmp_path / "r" / "checkpoint.msgpack").exists()
    assert read_metrics(tmp_path / "r" / "metrics.jsonl") == []


def test_nan_in_a_later_chunk_keeps_the_last_good_checkpoint(toy_file, tmp_path, monkeypatch):
    import jax
    import jax.numpy as jnp

    from o3srl import train
    from o3srl.train import TrainingDiverged, run

    original = train.build_learner

    def poisoned_learner(cfg, problem):
        learner = original(cfg, problem)
        rounds = learner.run_rounds

        def run_rounds(state, data, n):  # the third chunk (steps 201–300) turns the actor's weights into NaN
            state, metrics = rounds(state, data, n)
            poison = jnp.where(state.oracle.step >= 300, jnp.nan, 1.0)
            actor = jax.tree.map(lambda x: x * poison, state.oracle.actor)
            return state.replace(oracle=state.oracle.replace(actor=actor)), metrics

        learner.run_rounds = run_rounds
        return learner

    monkeypatch.setattr(train, "build_learner", poisoned_learner)
    with pytest.raises(TrainingDiverged) as exc:
        run(small_config(toy_file, tmp_path / "r"))
    assert "training diverged in steps 201–300: parameter oracle/actor/params/" in str(exc.value)
    assert "the last good checkpoint (step 200) is intact" in str(exc.value)
    payload = serialization.msgpack_restore((tmp_path / "r" / "checkpoint.msgpack").read_bytes())
    assert payload["step"] == 200
    assert all(np.isfinite(v).all() for _, v in _flatten(payload["state"]) if v.dtype.kind == "f")
    assert [r["step"] for r in read_metrics(tmp_path / "r" / "metrics.jsonl")] == [100, 200]


# ------------------------------------------------------------------------------------------------ file system
def test_run_dir_under_a_file(toy_file, tmp_path, capsys):
    (tmp_path / "plain").write_text("x")
    err = _one_error(
        capsys,
        main(
            [
                "train",
                "--task",
                "toy",
                "--env-id",
                "o3srl.envs.toy:ToyRunEnv",
                "--dataset",
                str(toy_file),
                "--no-progress",
                "--run-dir",
                str(tmp_path / "plain" / "run"),
            ]
        ),
    )
    assert err.startswith(f"error: cannot create run directory {tmp_path / 'plain' / 'run'}: Not a directory")


def test_unwritable_run_dir(toy_file, tmp_path, monkeypatch):
    from o3srl import io

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "r"))

    monkeypatch.setattr(io.tempfile, "mkstemp", refuse)
    with pytest.raises(O3SRLError, match=r"cannot write the run directory .*: Permission denied"):
        run_cfg = small_config(toy_file, tmp_path / "r", steps=100)
        from o3srl.train import run

        run(run_cfg)


def test_disk_full_while_checkpointing_keeps_the_last_checkpoint(toy_file, tmp_path, monkeypatch):
    """ENOSPC inside the atomic write of the second checkpoint: one error, the first checkpoint intact, no
    temporary file left, and the run resumes to the uninterrupted result."""
    from o3srl.train import run

    real_fsync = os.fsync
    state = {"checkpoints": 0}

    def fsync(fd):
        if ".checkpoint.msgpack." in os.readlink(f"/proc/self/fd/{fd}"):
            state["checkpoints"] += 1
            if state["checkpoints"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(
        O3SRLError,
        match=r"cannot write the checkpoint of step 400 .*No space left on device; the "
        r"last checkpoint \(step 200\) is intact: continue with --resume",
    ):
        run(small_config(toy_file, tmp_path / "r"))
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert serialization.msgpack_restore((tmp_path / "r" / "checkpoint.msgpack").read_bytes())["step"] == 200
    assert not list((tmp_path / "r").glob(".*.tmp"))
    run(TrainConfig(), resume_dir=str(tmp_path / "r"))
    run(small_config(toy_file, tmp_path / "full"))
    assert _rows(tmp_path / "full") == _rows(tmp_path / "r")


def test_os_errors_nobody_anticipated_are_one_line(capsys, monkeypatch):
    from o3srl import cli

    def broken(argv, prog):
        raise OSError(errno.EROFS, "Read-only file system", "/somewhere/file")

    monkeypatch.setattr(cli, "_load", lambda target: broken)
    monkeypatch.setattr(cli, "RAW_ARGV", {cli.COMMANDS["train"][0]})
    err = _one_error(capsys, main(["train"]))
    assert err == "error: /somewhere/file: Read-only file system"
