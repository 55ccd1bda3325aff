"""Experiment grids: validation, the results file, local and Ray executors, skipping finished cells, resuming."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import pytest
from tests.test_train import cost_model_table

from o3srl.bench import run_grid
from o3srl.config import config_differences
from o3srl.errors import ConfigError, O3SRLError
from o3srl.grid import load_grid, parse_grid, select_algorithms, select_tasks
from o3srl.results import ResultsWriter, finished_rows, read_rows

TOY = "o3srl.envs.toy:ToyRunEnv"
GRIDS = Path(__file__).parent.parent / "benchmarks" / "grids"


def toy_grid(dataset: Path, root: Path, name: str = "toy") -> dict:
    """Two cells on the toy task: O3SRL and the unconstrained oracle, tiny networks, a few hundred steps."""
    return {
        "name": name,
        "tasks": ["toy"],
        "cost_limits": [5],
        "seeds": [0],
        "results": str(root / f"{name}.jsonl"),
        "runs_dir": str(root / "runs"),
        "defaults": {
            "steps": 200,
            "log_every": 100,
            "checkpoint_every": 100,
            "eval_episodes": 2,
            "td3bc": {"hidden": [16, 16], "batch_size": 32},
            "o3srl": {"feedback_batch": 16},
            # The default (adaptive) λ-player's cost model, small (tests/test_train.py).
            "cost_model": cost_model_table(),
        },
        "per_task": {"toy": {"env_id": TOY, "dataset": str(dataset)}},
        "algorithms": {
            "o3srl": {"algo": "o3srl"},
            "td3bc-lambda0": {"algo": "td3bc", "fixed_lambda": 0, "label": "TD3+BC λ=0"},
        },
    }


def _toml(data: dict) -> str:
    """Just enough TOML for these grids (tables of scalars / lists / one level of inline tables)."""

    def value(v):
        if isinstance(v, dict):
            return "{ " + ", ".join(f'"{k}" = {value(x)}' for k, x in v.items()) + " }"
        return json.dumps(v, ensure_ascii=False)

    top = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    tables = []
    for k, v in data.items():
        if isinstance(v, dict):
            for sub, body in v.items():
                if isinstance(body, dict) and k != "defaults":
                    tables.append(f'[{k}."{sub}"]\n' + "\n".join(f'"{a}" = {value(b)}' for a, b in body.items()))
                else:
                    tables.append(f"[{k}]\n" + "\n".join(f'"{a}" = {value(b)}' for a, b in v.items()))
                    break
    return "\n".join(top) + "\n\n" + "\n\n".join(tables) + "\n"


def _comparable(row: dict) -> dict:
    keep = (
        "cell_id",
        "status",
        "task",
        "algorithm",
        "label",
        "cost_limit",
        "seed",
        "metrics",
        "episodes",
        "reward_reference",
        "reward_range",
        "safe_frontier",
        "dataset_sha256",
        "o3srl_version",
        "steps",
    )
    return {k: row[k] for k in keep}


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The 2-cell toy grid run once by the local executor (2 single-threaded worker processes)."""
    from o3srl.data import OfflineDataset
    from o3srl.envs.toy import toy_dataset

    root = tmp_path_factory.mktemp("bench")
    dataset = root / "toy.hdf5"
    OfflineDataset(toy_dataset(120, seed=0, low=0.2)).save(dataset)
    grid = parse_grid(toy_grid(dataset, root), name="toy")
    t0 = time.time()
    summary = run_grid(grid, workers=2, progress=False, log=lambda s: None)
    return {"root": root, "dataset": dataset, "grid": grid, "summary": summary, "seconds": time.time() - t0}


# ---------------------------------------------------------------------------------------------------- validation
def test_cells_layers_and_ids(tmp_path, monkeypatch):
    monkeypatch.setenv("O3SRL_DATA_DIR", str(tmp_path / "data"))
    data = {
        "tasks": ["OfflineBallRun-v0", "OfflineCarRun-v0"],
        "cost_limits": [5, 10],
        "seeds": [0, 1],
        "dataset": "{data_dir}/{task}.hdf5",
        "defaults": {"steps": 1000, "eval_episodes": 3},
        "per_task": {"OfflineCarRun-v0": {"steps": 2000}},
        "algorithms": {"o3srl": {}, "fixed": {"algo": "td3bc", "fixed_lambda": 5}},
        "per_cell": [
            {"task": "OfflineCarRun-v0", "algorithm": "o3srl", "cost_limit": 10, "set": {"o3srl.num_arms": 10}}
        ],
    }
    grid = parse_grid(data, name="g", results=str(tmp_path / "r.jsonl"), runs_dir=str(tmp_path / "runs"))
    assert len(grid.cells) == 2 * 2 * 2 * 2
    cells = {c.cell_id: c for c in grid.cells}
    c = cells["OfflineCarRun-v0__o3srl__k10__s1"]
    assert (
        c.config.steps == 2000 and c.config.o3srl.num_arms == 10 and c.config.seed == 1 and c.config.cost_limit == 10.0
    )
    assert c.config.dataset == str(tmp_path / "data" / "OfflineCarRun-v0.hdf5")
    assert c.config.run_dir == str(tmp_path / "runs" / "OfflineCarRun-v0__o3srl__k10__s1") and not c.config.progress
    f = cells["OfflineBallRun-v0__fixed__k5__s0"]
    assert f.config.algo == "td3bc" and f.config.fixed_lambda == 5.0 and isinstance(f.config.fixed_lambda, float)
    assert f.config.steps == 1000 and f.config.o3srl.num_arms == 5 and f.order == (0, 1)

    ball = select_tasks(grid, ["OfflineBallRun-v0"])
    assert len(ball.cells) == 8 and {c.task for c in ball.cells} == {"OfflineBallRun-v0"}
    assert [c.cell_id for c in ball.cells] == [c.cell_id for c in grid.cells if c.task == "OfflineBallRun-v0"]
    assert ball.results == grid.results and ball.runs_dir == grid.runs_dir
    both = select_tasks(grid, ["OfflineCarRun-v0", "OfflineBallRun-v0"])
    assert [c.task for c in both.cells] == ["OfflineCarRun-v0"] * 8 + ["OfflineBallRun-v0"] * 8
    assert [c.cell_id for c in both.cells[8:]] == [c.cell_id for c in ball.cells]
    with pytest.raises(ConfigError, match="'OfflineAntRun-v0' are not in grid 'g'"):
        select_tasks(grid, ["OfflineAntRun-v0"])

    fixed = select_algorithms(grid, ["fixed"])
    assert [c.cell_id for c in fixed.cells] == [c.cell_id for c in grid.cells if c.algorithm == "fixed"]
    assert len(fixed.cells) == 8 and fixed.results == grid.results
    order = select_tasks(select_algorithms(grid, ["fixed", "o3srl"]), ["OfflineBallRun-v0"])
    assert [c.algorithm for c in order.cells] == ["fixed"] * 4 + ["o3srl"] * 4
    with pytest.raises(ConfigError, match="'cpq' are not in grid 'g' \\(its algorithms: o3srl, fixed\\)"):
        select_algorithms(grid, ["cpq"])


BAD_GRIDS = [
    ({"bogus": 1}, "unknown grid key"),
    ({"tasks": ["OfflineNope-v0"], "per_task": {}}, "unknown task 'OfflineNope-v0'"),
    ({"tasks": []}, "tasks must not be empty"),
    ({"seeds": [0, 0]}, "seeds has duplicates"),
    ({"cost_limits": [-1]}, "cost_limits must be finite and ≥ 0"),
    ({"cost_limits": ["5"]}, "every entry of cost_limits must be"),
    ({"defaults": {"stepz": 10}}, "unknown config key 'stepz'"),
    ({"defaults": {"steps": "many"}}, "steps = 'many' does not fit"),
    ({"defaults": {"td3bc": {"hidden": [16, "x"]}}}, "td3bc.hidden"),
    ({"defaults": {"algo": "ppo"}}, "algo = 'ppo' does not fit its type one of"),
    ({"defaults": {"seed": 3}}, "'seed' is set by the grid itself"),
    ({"defaults": {"td3bc": 3}}, "'td3bc' is a section"),
    ({"defaults": {"steps": 105}}, "steps (105) must be a multiple"),
    ({"defaults": {"eval_episodes": 0}}, "eval_episodes must be ≥ 1"),
    ({"algorithms": {}}, "at least one [algorithms"),
    ({"algorithms": {"bad name": {}}}, "algorithm name 'bad name'"),
    ({"per_task": {"other": {}}}, "not in tasks"),
    ({"per_cell": [{"seed": 7, "set": {"steps": 100}}]}, "seed = 7 is not in the grid's seeds"),
    ({"per_cell": [{"task": "toy"}]}, "needs 'set'"),
    ({"per_cell": [{"colour": "red", "set": {}}]}, "unknown key"),
    ({"per_task": {"toy": {"env_id": TOY, "dataset": "$NO_SUCH_VARIABLE_O3SRL/x.hdf5"}}}, "NO_SUCH_VARIABLE_O3SRL"),
    ({"per_task": {"toy": {"env_id": TOY}}}, "no dataset for task 'toy'"),
]


@pytest.mark.parametrize("change, message", BAD_GRIDS)
def test_grid_errors_name_the_problem(tmp_path, change, message):
    data = toy_grid(tmp_path / "toy.hdf5", tmp_path)
    data.update(change)
    with pytest.raises(ConfigError) as err:
        parse_grid(data, name="g")
    assert message in str(err.value)


def test_grid_files_load_and_bad_toml_is_one_error(tmp_path, monkeypatch):
    monkeypatch.setenv("O3SRL_DATA_DIR", str(tmp_path))
    paper = load_grid(GRIDS / "paper_bullet.toml")
    assert len(paper.cells) == 8 * 3 * 4 * 3
    assert {c.config.eval_episodes for c in paper.cells} == {20}
    assert all(c.config.dataset == str(tmp_path / f"{c.task}.hdf5") for c in paper.cells)
    kappa5 = load_grid(GRIDS / "kappa5_bullet.toml")
    assert len(kappa5.cells) == 8 * 3 * 3 and {c.cost_limit for c in kappa5.cells} == {5.0}
    assert len(load_grid(GRIDS / "ci_small.toml").cells) >= 2
    bad = tmp_path / "bad.toml"
    bad.write_text("tasks = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_grid(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_grid(tmp_path / "none.toml")


def test_config_differences_ignore_machine_local_fields():
    a = {"steps": 100, "dataset": "/a", "run_dir": "/x", "td3bc": {"hidden": [16, 16]}}
    b = {"steps": 200, "dataset": "/b", "run_dir": "/y", "td3bc": {"hidden": [32, 32]}}
    assert config_differences(a, b) == ["steps: 100 → 200", "td3bc.hidden: [16, 16] → [32, 32]"]
    assert config_differences(a, dict(a, dataset="/elsewhere")) == []


def test_config_differences_accept_a_later_added_field_at_its_old_behaviour():
    saved = {"steps": 100, "td3bc": {"hidden": [16, 16]}}  # written before td3bc.critic_layer_norm existed
    now = {"steps": 100, "td3bc": {"hidden": [16, 16], "critic_layer_norm": False}}
    assert config_differences(saved, now) == []
    turned_on = {"steps": 100, "td3bc": {"hidden": [16, 16], "critic_layer_norm": True}}
    assert config_differences(saved, turned_on) == ["td3bc.critic_layer_norm: None → True"]
    # an unknown new field is a difference
    assert config_differences(saved, {"steps": 100, "td3bc": {"hidden": [16, 16], "new": 1}}) == ["td3bc.new: None → 1"]
    # a section added since (bc): each field at its old-behaviour value is no difference, another value is
    bc = {"hidden": [256, 256], "learning_rate": 1e-3, "batch_size": 512}
    assert config_differences(saved, {**saved, "bc": bc}) == []
    assert config_differences(saved, {**saved, "bc": {**bc, "batch_size": 64}}) == ["bc.batch_size: None → 64"]


def test_only_the_sections_a_run_reads_are_compared():
    from o3srl.config import TrainConfig, config_json_dict, sections_read

    earlier = TrainConfig(o3srl=dataclasses.replace(TrainConfig().o3srl, player="earlier"))  # no cost model
    adaptive = TrainConfig()  # the adaptive λ-player, the default
    fixed = TrainConfig(algo="td3bc", o3srl=adaptive.o3srl)  # a fixed λ takes the earlier player's knobs
    assert sections_read(earlier) == {"o3srl", "td3bc"}
    assert sections_read(adaptive) == {"o3srl", "td3bc", "cost_model"}
    assert sections_read(fixed) == {"o3srl", "td3bc"}
    assert sections_read(TrainConfig(oracle="iql")) == {"o3srl", "iql", "cost_model"}
    assert sections_read(TrainConfig(variant="theory")) == {"o3srl", "theory", "td3bc"}
    assert sections_read(TrainConfig(algo="bc-safe")) == {"bc", "o3srl"}
    assert sections_read(TrainConfig(algo="cpq")) == {"cpq", "o3srl"}
    assert sections_read(TrainConfig(algo="bcq-lag")) == {"bcql", "o3srl"}
    assert sections_read(TrainConfig(algo="coptidice")) == {"coptidice", "o3srl"}
    assert sections_read(TrainConfig(algo="bear-lag")) == {"bearl", "o3srl"}
    assert sections_read(TrainConfig(algo="cdt")) == {"cdt", "o3srl"}
    assert sections_read(TrainConfig(algo="fisor")) == {"fisor", "o3srl"}
    assert sections_read(TrainConfig(algo="caps")) == {"caps", "o3srl"}
    for cfg in (earlier, adaptive):
        saved = config_json_dict(cfg)
        changed = {**saved, "cost_model": {**saved["cost_model"], "fit_steps": 1}, "iql": {**saved["iql"], "tau": 0.5}}
        diff = config_differences(saved, changed, sections=sections_read(cfg))
        assert diff == ([] if cfg is earlier else ["cost_model.fit_steps: 20000 → 1"])
        assert len(config_differences(saved, changed)) == 2  # without sections: every difference


def test_configs_compare_as_the_run_read_them_whatever_defaults_they_were_written_under():
    from o3srl.config import TrainConfig, config_json_dict, effective_config, sections_read

    earlier = TrainConfig(o3srl=dataclasses.replace(TrainConfig().o3srl, player="earlier"))
    now = config_json_dict(earlier)  # the earlier player: its knobs None in the file, filled by the player
    saved = json.loads(json.dumps(now))
    saved["o3srl"].update(bandit="exp3", feedback="shaped")  # written when the knobs were explicit defaults
    del saved["o3srl"]["tail_members"]  # written before the tail existed (irrelevant: the output is the last iterate)
    read = sections_read(earlier)
    assert config_differences(saved, now, sections=read) != []  # raw: they look different
    assert config_differences(effective_config(saved), effective_config(now), sections=read) == []
    saved["o3srl"]["bandit"] = "hedge"  # a knob that really differs still counts
    assert config_differences(effective_config(saved), effective_config(now), sections=read) == [
        "o3srl.bandit: 'hedge' → 'exp3'"
    ]
    assert effective_config({"not": "a config"}) == {"not": "a config"}


def test_a_saved_config_without_a_later_field_reads_back_with_its_old_behaviour():
    from o3srl.config import TrainConfig, from_dict, to_dict

    saved = to_dict(TrainConfig())
    del saved["td3bc"]["critic_layer_norm"]  # a run directory written before the field existed
    assert from_dict(saved).td3bc.critic_layer_norm is False
    for value in (True, False):  # a saved value always wins
        saved["td3bc"]["critic_layer_norm"] = value
        assert from_dict(saved).td3bc.critic_layer_norm is value


def test_the_budget_convention_moved_beside_the_cost_limit():
    from o3srl.algos.base import Setting
    from o3srl.algos.td3bc import TD3BCConfig
    from o3srl.config import TrainConfig, apply_overrides, config_json_dict, effective_config, from_dict

    saved = config_json_dict(TrainConfig())
    del saved["budget_convention"]  # a run directory written while each learner's section held the convention
    saved["o3srl"]["budget_convention"] = "average"
    saved["theory"] = {**saved["theory"], "budget_convention": "discounted"}
    assert from_dict(saved).budget_convention == "average"  # the practical run read o3srl's
    assert from_dict({**saved, "variant": "theory"}).budget_convention == "discounted"  # the theory run, theory's
    now = config_json_dict(TrainConfig(budget_convention="average"))
    assert config_differences(effective_config(saved), effective_config(now)) == []
    assert config_differences(effective_config(saved), effective_config(config_json_dict(TrainConfig()))) == [
        "budget_convention: 'average' → 'osrl'"
    ]
    with pytest.raises(ConfigError, match="'o3srl.budget_convention' has moved: write 'budget_convention'"):
        apply_overrides(TrainConfig(), {"o3srl.budget_convention": "average"})
    # the Setting carries it to the budget: κ = 5, T = 100, γ = 0.99, cost scale 1
    oracle = TD3BCConfig(gamma=0.99, cost_scale=1.0)
    for convention, per_step in (("average", 0.05), ("discounted", 0.05), ("osrl", 5 * (1 - 0.99**100) / 100)):
        setting = Setting(3, 2, 5.0, 100, 1000, 1.0, 1.0, budget_convention=convention)
        assert setting.budget(oracle).per_step == pytest.approx(per_step)


# ---------------------------------------------------------------------------------------------------- results file
def test_results_file_survives_a_torn_last_line_and_is_locked(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"cell_id": "a", "status": "ok"}\n{"cell_id": "b", "sta')
    assert [r["cell_id"] for r in read_rows(path)] == ["a"]
    writer = ResultsWriter(path)
    with pytest.raises(O3SRLError, match="another 'o3srl bench'"):
        ResultsWriter(path)
    writer.append({"cell_id": "c", "status": "failed"})
    writer.close()
    assert path.read_text() == '{"cell_id": "a", "status": "ok"}\n{"cell_id": "c", "status": "failed"}\n'
    assert list(finished_rows(read_rows(path))) == ["a"]
    path.write_text('{"cell_id": "a"}\nnot json\n{"cell_id": "b"}\n')
    with pytest.raises(O3SRLError, match="line 2"):
        read_rows(path)


# ---------------------------------------------------------------------------------------------------- executors
def test_local_executor_runs_the_grid(local_run):
    summary, grid = local_run["summary"], local_run["grid"]
    assert (summary.total, summary.skipped, summary.finished, summary.failed) == (2, 0, 2, 0)
    rows = read_rows(grid.results)
    assert sorted(r["cell_id"] for r in rows) == ["toy__o3srl__k5__s0", "toy__td3bc-lambda0__k5__s0"]
    for row in rows:
        assert row["status"] == "ok" and row["resumed_from_step"] == 0
        assert row["config"]["eval_episodes"] == 2 and row["config"]["steps"] == 200
        assert len(row["dataset_sha256"]) == 64 and row["o3srl_version"]
        assert row["train_seconds"] > 0 and row["eval_seconds"] >= 0
        assert len(row["episodes"]["reward"]) == 2 and row["metrics"]["eval/episodes"] == 2.0
        assert row["reward_reference"] == "dataset"
        evaluated = json.loads((Path(row["run_dir"]) / "eval.json").read_text())
        assert evaluated["eval/normalized_cost"] == row["metrics"]["eval/normalized_cost"]
    csv = grid.results.with_suffix(".csv").read_text().splitlines()
    assert csv[0].startswith("cell_id,status,") and len(csv) == 3


def test_rerun_skips_finished_cells(local_run):
    grid = local_run["grid"]
    before = grid.results.read_text()
    t0 = time.time()
    summary = run_grid(grid, workers=2, progress=False, log=lambda s: None)
    assert (summary.skipped, summary.finished, summary.failed) == (2, 0, 0)
    assert grid.results.read_text() == before
    assert time.time() - t0 < 5  # nothing was trained


def test_changed_config_of_a_finished_cell_is_refused(local_run):
    data = toy_grid(local_run["dataset"], local_run["root"])
    data["defaults"]["eval_episodes"] = 3
    with pytest.raises(ConfigError, match="eval_episodes: 2 → 3"):
        run_grid(parse_grid(data, name="toy"), workers=1, progress=False)


def test_missing_datasets_are_reported_before_anything_is_written(tmp_path):
    data = toy_grid(tmp_path / "absent.hdf5", tmp_path)
    with pytest.raises(ConfigError, match="dataset file.s. missing: .*absent.hdf5 .task toy."):
        run_grid(parse_grid(data, name="toy"), workers=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_half_finished_cell_resumes(local_run, tmp_path, monkeypatch):
    from o3srl import logger
    from o3srl.logger import read_metrics
    from o3srl.train import run

    data = toy_grid(local_run["dataset"], tmp_path)
    data["algorithms"] = {"o3srl": {"algo": "o3srl"}}
    grid = parse_grid(data, name="toy")
    (cell,) = grid.cells

    original = logger.JsonlSink.write

    def dying_write(self, step, metrics):  # killed while logging step 200: the last checkpoint is at step 100
        if step == 200:
            raise KeyboardInterrupt
        original(self, step, metrics)

    monkeypatch.setattr(logger.JsonlSink, "write", dying_write)
    with pytest.raises(KeyboardInterrupt):
        run(cell.train_config())
    monkeypatch.setattr(logger.JsonlSink, "write", original)

    summary = run_grid(grid, workers=0, progress=False, log=lambda s: None)  # in this process: quicker
    assert summary.finished == 1
    (row,) = read_rows(grid.results)
    assert row["status"] == "ok" and row["resumed_from_step"] == 100
    logged = read_metrics(cell.run_dir / "metrics.jsonl")
    assert [r["step"] for r in logged] == [100, 200]
    # Training time covers both sittings: the first 100 steps (before the kill) and the last 100.
    assert row["train_seconds"] == pytest.approx(sum(100 / r["time/steps_per_second"] for r in logged), abs=2e-3)
    assert row["sitting_seconds"] > 0
    reference = finished_rows(read_rows(local_run["grid"].results))["toy__o3srl__k5__s0"]
    assert row["metrics"] == pytest.approx(reference["metrics"], rel=1e-4, abs=1e-6)


def test_a_failing_cell_is_recorded_and_the_grid_goes_on(local_run, tmp_path):
    broken = tmp_path / "broken.hdf5"
    broken.write_bytes(b"not an hdf5 file")
    data = toy_grid(local_run["dataset"], tmp_path)
    data["tasks"] = ["toy", "toy2"]
    data["per_task"]["toy2"] = {"env_id": TOY, "dataset": str(broken)}
    data["algorithms"] = {"td3bc-lambda0": {"algo": "td3bc"}}
    grid = parse_grid(data, name="toy")
    summary = run_grid(grid, workers=0, max_retries=1, progress=False, log=lambda s: None)
    assert (summary.finished, summary.failed, summary.failed_cells) == (1, 1, ["toy2__td3bc-lambda0__k5__s0"])
    rows = read_rows(grid.results)
    failed = [r for r in rows if r["status"] == "failed"]
    assert [r["attempt"] for r in failed] == [1, 2] and all(r["error"] for r in failed)
    assert list(finished_rows(rows)) == ["toy__td3bc-lambda0__k5__s0"]


@pytest.mark.slow  # starting Ray takes longer than the rest of this file (Ray is an optional extra)
@pytest.mark.filterwarnings("ignore:os.fork")  # Ray starts its processes after JAX is loaded here; they do not use it
def test_ray_executor_writes_the_same_rows_as_the_local_one(local_run, tmp_path):
    ray = pytest.importorskip("ray")
    grid = parse_grid(toy_grid(local_run["dataset"], tmp_path), name="toy")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = run_grid(grid, executor="ray", max_retries=1, progress=False, log=lambda s: None)
    finally:
        ray.shutdown()
    assert (summary.finished, summary.failed) == (2, 0)
    local = {r["cell_id"]: _comparable(r) for r in read_rows(local_run["grid"].results)}
    remote = {r["cell_id"]: _comparable(r) for r in read_rows(grid.results)}
    assert remote == local


def test_ray_missing_names_the_extra(local_run, monkeypatch):
    from o3srl.bench import _run_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(O3SRLError, match=r"pip install 'o3srl\[ray\]'"):
        _run_ray(list(local_run["grid"].cells), "toy", None, 0, lambda row: False)


def test_bench_cli_dry_run_and_errors(local_run, tmp_path, capsys):
    from o3srl.cli import main

    path = tmp_path / "grid.toml"
    path.write_text(_toml(toy_grid(local_run["dataset"], local_run["root"])))
    assert main(["bench", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "done           toy__o3srl__k5__s0" in out and "2 cells (2 done)" in out
    path.write_text("tasks = ['OfflineNope-v0']\ncost_limits = [5]\nseeds = [0]\n[algorithms.a]\n")
    assert main(["bench", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "unknown task 'OfflineNope-v0'" in err and len(err.strip().splitlines()) == 1


def test_identical_finished_cells_of_another_grid_are_adopted(local_run, tmp_path, monkeypatch):
    """A second grid (other name, other algorithm names) whose cells equal the first grid's takes their rows over
    without training; a cell whose config differs is not adopted."""
    import o3srl.bench as bench

    data = toy_grid(local_run["dataset"], tmp_path, name="other")
    data["algorithms"] = {
        "mine": {"algo": "o3srl", "label": "O3SRL here"},
        "lam0": {"algo": "td3bc", "fixed_lambda": 0},
        "lam1": {"algo": "td3bc", "fixed_lambda": 1},
    }  # not in the first grid
    grid = parse_grid(data, name="other")
    ran = []
    monkeypatch.setattr(bench, "_run_local", lambda cells, *a, **k: ran.extend(c.cell_id for c in cells))
    summary = run_grid(grid, workers=1, progress=False, log=lambda s: None, adopt=[local_run["grid"].results])
    assert summary.adopted == 2 and ran == ["toy__lam1__k5__s0"]  # only the new cell would be trained
    rows = {r["cell_id"]: r for r in read_rows(grid.results)}
    source = {r["algorithm"]: r for r in read_rows(local_run["grid"].results)}
    mine = rows["toy__mine__k5__s0"]
    assert (mine["grid"], mine["algorithm"], mine["label"]) == ("other", "mine", "O3SRL here")
    assert mine["metrics"] == source["o3srl"]["metrics"] and mine["run_dir"] == source["o3srl"]["run_dir"]
    assert mine["adopted_from"] == {
        "results": str(local_run["grid"].results),
        "grid": "toy",
        "cell_id": "toy__o3srl__k5__s0",
    }
    assert rows["toy__lam0__k5__s0"]["metrics"] == source["td3bc-lambda0"]["metrics"]
    # adopted rows count as finished: nothing is adopted or run twice
    ran.clear()
    again = run_grid(grid, workers=1, progress=False, log=lambda s: None, adopt=[local_run["grid"].results])
    assert again.adopted == 0 and ran == ["toy__lam1__k5__s0"]
    with pytest.raises(ConfigError, match="does not exist"):
        run_grid(grid, workers=1, progress=False, adopt=[tmp_path / "none.jsonl"])


def test_a_run_of_the_same_training_with_another_output_is_adopted_with_its_output_chosen_again(local_run, tmp_path):
    """An adaptive O3SRL cell with the ``mix`` output takes over a finished ``best`` run of the same config (the
    training is the same, bit for bit): its run directory is copied, the output chosen again from the checkpoint
    and evaluated; an identical row, where there is one, is taken as it is. Anything else that differs is not
    adopted."""
    import numpy as np

    import o3srl
    from o3srl.algos.o3srl import CHOSEN_OUTPUTS, mixed_members
    from o3srl.bench import CHOSEN_OUTPUTS as BENCH_CHOSEN_OUTPUTS
    from o3srl.bench import output_choice_only
    from o3srl.rundir import read_output_info
    from o3srl.train import load_finished_run

    def grid_of(name: str, output: str, **more: object) -> dict:
        data = toy_grid(local_run["dataset"], tmp_path / name, name=name)
        o3 = {"player": "adaptive", "feedback_batch": 16, "output": output, "tail_members": 6, **more}
        data["algorithms"] = {"adaptive": {"algo": "o3srl", "o3srl": o3}}
        return data

    source = parse_grid(grid_of("best", "best"), name="best")
    assert run_grid(source, workers=0, progress=False, log=lambda s: None).finished == 1
    (best,) = read_rows(source.results)
    logged = []
    grid = parse_grid(grid_of("mix", "mix", mix_slots=5), name="mix")
    summary = run_grid(grid, workers=0, progress=False, log=logged.append, adopt=[source.results])
    assert summary.adopted == 1 and summary.finished == 0 and "its output chosen again" in logged[0]
    (row,) = read_rows(grid.results)
    cell = grid.cells[0]
    assert row["output_rechosen"] is True and row["run_dir"] == str(cell.run_dir) != best["run_dir"]
    assert row["train_seconds"] == best["train_seconds"] and row["config"]["o3srl"]["output"] == "mix"
    readings = np.asarray(load_finished_run(cell.run_dir).state.tail_readings)
    chosen = read_output_info(cell.run_dir)["output_members"]
    assert chosen == mixed_members(readings, 0.8 * 5, 3, 1.0, 5).tolist()
    assert o3srl.load_policy(cell.run_dir).num_members == len(chosen)
    assert (Path(best["run_dir"]) / "policy.msgpack").exists()  # the source is left as it was
    # Output-choice fields only, and only between the outputs chosen from readings.
    saved, current = {"algo": "o3srl", "o3srl": {"output": "best"}}, {"algo": "o3srl", "o3srl": {"output": "mix"}}
    assert BENCH_CHOSEN_OUTPUTS == CHOSEN_OUTPUTS  # bench's copy (it loads without JAX) is the algorithm's list
    assert output_choice_only(saved, current, ["o3srl.output: 'best' → 'mix'", "o3srl.mix_slots: None → 20"])
    assert not output_choice_only(saved, current, ["o3srl.output: 'best' → 'mix'", "seed: 0 → 1"])
    assert not output_choice_only(
        saved, {"algo": "o3srl", "o3srl": {"output": "tail"}}, ["o3srl.output: 'best' → 'tail'"]
    )
    other = parse_grid(grid_of("other", "mix", tail_members=7), name="other")
    assert run_grid(other, workers=0, progress=False, log=lambda s: None, adopt=[source.results]).adopted == 0
