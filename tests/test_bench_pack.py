"""Grids trained packed (several cells as one program) and in separate train / evaluate stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.test_bench import toy_grid

from o3srl.bench import is_trained, make_packs, run_grid
from o3srl.errors import ConfigError
from o3srl.grid import parse_grid
from o3srl.results import read_rows


def _grid(dataset: Path, root: Path, **extra) -> dict:
    data = toy_grid(dataset, root)
    data["seeds"] = [0, 1]
    data["algorithms"]["td3bc-lambda2"] = {"algo": "td3bc", "fixed_lambda": 2}
    data.update(extra)
    return data


def test_cells_that_differ_in_data_only_share_a_pack(toy_file, tmp_path):
    grid = parse_grid(_grid(toy_file, tmp_path), name="toy")
    packs = [[c.cell_id for c in p] for p in make_packs(grid.cells, 8)]
    # O3SRL's seeds in one pack; the fixed-λ cells (λ = 0 and 2, two seeds) in another.
    assert packs == [
        ["toy__o3srl__k5__s0", "toy__o3srl__k5__s1"],
        [
            "toy__td3bc-lambda0__k5__s0",
            "toy__td3bc-lambda0__k5__s1",
            "toy__td3bc-lambda2__k5__s0",
            "toy__td3bc-lambda2__k5__s1",
        ],
    ]
    assert [len(p) for p in make_packs(grid.cells, 3)] == [2, 3, 1]
    assert [len(p) for p in make_packs(grid.cells, 1)] == [1] * 6


def test_pack_option_is_checked(toy_file, tmp_path):
    with pytest.raises(ConfigError, match="pack must be an integer ≥ 1"):
        parse_grid(_grid(toy_file, tmp_path, pack=0), name="toy")
    with pytest.raises(ConfigError, match="pack must be an integer"):
        parse_grid(_grid(toy_file, tmp_path, pack="all"), name="toy")
    grid = parse_grid(_grid(toy_file, tmp_path), name="toy")
    with pytest.raises(ConfigError, match="unknown stage"):
        run_grid(grid, workers=0, progress=False, stage="both")  # type: ignore[arg-type]


def test_packed_grid_trains_then_evaluates_from_run_directories_alone(toy_file, tmp_path, capsys):
    import shutil

    from o3srl.bench import cli_bench

    dataset = tmp_path / "data" / "toy.hdf5"
    dataset.parent.mkdir()
    shutil.copy(toy_file, dataset)
    data = _grid(dataset, tmp_path, pack=8)
    data["algorithms"].pop("td3bc-lambda0")
    grid = parse_grid(data, name="toy")

    said: list[str] = []
    trained = run_grid(grid, workers=0, progress=False, log=said.append, stage="train")
    assert (trained.trained, trained.failed) == (4, 0)
    assert sum("pack of 2" in line for line in said) == 4  # O3SRL's two seeds; the fixed λ = 2 cells' two seeds
    assert read_rows(grid.results) == []  # training alone records nothing: the run directories are the record
    assert all(is_trained(c) for c in grid.cells)
    for cell in grid.cells:
        assert json.loads((cell.run_dir / "config.json").read_text())["seed"] == cell.seed
        assert "eval/reward" not in json.loads((cell.run_dir / "eval.json").read_text())

    # The evaluating machine has no dataset: the run directories are enough.
    shutil.rmtree(dataset.parent)
    evaluated = run_grid(grid, workers=0, progress=False, log=lambda s: None, stage="evaluate")
    assert (evaluated.finished, evaluated.failed, evaluated.untrained) == (4, 0, 0)
    rows = read_rows(grid.results)
    assert sorted(r["cell_id"] for r in rows) == sorted(c.cell_id for c in grid.cells)
    for row in rows:
        assert row["status"] == "ok" and row["pack"] is None and row["train_seconds"] > 0
        assert row["metrics"]["eval/episodes"] == 2.0 and len(row["dataset_sha256"]) == 64
    again = run_grid(grid, workers=0, progress=False, log=lambda s: None, stage="evaluate")
    assert (again.skipped, again.finished) == (4, 0)
    assert cli_bench(str(_write(tmp_path, data)), dry_run=True) == 0
    assert capsys.readouterr().out.count("done ") == 4


def test_trained_cells_copied_without_checkpoints_are_evaluated_not_retrained(toy_file, tmp_path):
    data = _grid(toy_file, tmp_path, pack=8)
    data["algorithms"].pop("td3bc-lambda0")
    data["algorithms"].pop("td3bc-lambda2")
    grid = parse_grid(data, name="toy")
    assert run_grid(grid, workers=0, progress=False, log=lambda s: None, stage="train").trained == 2
    policies = {}
    for cell in grid.cells:  # what travels to the evaluating machine: everything but the checkpoint
        (cell.run_dir / "checkpoint.msgpack").unlink()
        policies[cell.cell_id] = (cell.run_dir / "policy.msgpack").read_bytes()
    assert all(is_trained(c) for c in grid.cells)
    said: list[str] = []
    summary = run_grid(grid, workers=0, progress=False, log=said.append)  # stage "all"
    assert (summary.finished, summary.failed) == (2, 0)
    for cell in grid.cells:
        assert (cell.run_dir / "policy.msgpack").read_bytes() == policies[cell.cell_id]  # not trained again
        assert not (cell.run_dir / "checkpoint.msgpack").exists()
    rows = read_rows(grid.results)
    assert [r["resumed_from_step"] for r in rows] == [grid.cells[0].config.steps] * 2

    # A summary older than the grid's steps (the grid was lengthened) is not a finished training.
    for cell in grid.cells:
        summary_file = cell.run_dir / "eval.json"
        record = json.loads(summary_file.read_text())
        summary_file.write_text(json.dumps({**record, "step": cell.config.steps - 1}))
        assert not is_trained(cell)


def test_evaluate_stage_leaves_untrained_cells(toy_file, tmp_path):
    grid = parse_grid(_grid(toy_file, tmp_path), name="toy")
    summary = run_grid(grid, workers=0, progress=False, log=lambda s: None, stage="evaluate")
    assert (summary.untrained, summary.finished) == (6, 0)
    assert read_rows(grid.results) == []


def _write(root: Path, data: dict) -> Path:
    from tests.test_bench import _toml

    path = root / "grid.toml"
    path.write_text(_toml(data))
    return path


def test_packed_grid_in_one_go_equals_cells_alone(toy_file, tmp_path):
    alone = parse_grid(_grid(toy_file, tmp_path / "alone", pack=1), name="toy")
    packed = parse_grid(_grid(toy_file, tmp_path / "packed", pack=4), name="toy")
    for grid in (alone, packed):
        summary = run_grid(grid, workers=0, progress=False, log=lambda s: None)
        assert (summary.finished, summary.failed) == (6, 0)
    rows_a = {r["cell_id"]: r for r in read_rows(alone.results)}
    rows_p = {r["cell_id"]: r for r in read_rows(packed.results)}
    assert {r["pack"] for r in rows_a.values()} == {1} and sorted(r["pack"] for r in rows_p.values()) == [
        2,
        2,
        4,
        4,
        4,
        4,
    ]
    for cid, row in rows_a.items():
        assert rows_p[cid]["metrics"] == pytest.approx(row["metrics"], rel=1e-3, abs=1e-3), cid
