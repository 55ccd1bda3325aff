"""benchmarks/output_rules.py: the script on a tiny finished run of the toy task (each rule's score is the mean of
its members' evaluations; a saved table scores the same)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "output_rules.py"


@pytest.fixture(scope="module")
def rules_module():
    spec = importlib.util.spec_from_file_location("output_rules", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_output_rules_on_a_tiny_run(rules_module, toy_file, tmp_path):
    from tests.test_train import small_config

    from o3srl.algos.o3srl import O3SRLConfig
    from o3srl.train import run

    run_dir = tmp_path / "run"
    run(small_config(toy_file, run_dir, steps=300, o3srl=O3SRLConfig(feedback_batch=32, tail_members=6)))
    table = rules_module.load_table(run_dir, 1, tmp_path / "tables")
    assert len(table["readings"]) == len(table["reward"]) == len(table["cost"]) == 6
    assert json.loads((run_dir / "member_table.json").read_text()) == table  # cached where the run is
    chosen = rules_module.rules()
    rows = rules_module.score_table(table, chosen)
    by_rule = {r["rule"]: r for r in rows}
    assert by_rule["last iterate"]["reward"] == pytest.approx(table["reward"][0])
    assert by_rule["tail (first 20, uniform)"]["cost"] == pytest.approx(np.mean(table["cost"]))
    ceiling = by_rule[rules_module.CEILING]  # chosen on the evaluations: within κ, and no rule beats it within κ
    assert ceiling["cost"] <= table["kappa"] + 1e-9 or ceiling["members"] == 1
    if ceiling["cost"] <= table["kappa"] + 1e-9:
        assert (
            ceiling["reward"]
            >= max(r["reward"] for r in rows if r["cost"] <= table["kappa"] and r["members"] <= 2) - 1e-9
        )
    saved = rules_module.load_table(tmp_path / "tables" / f"{run_dir.parent.name}__{run_dir.name}.json", 1, None)
    assert rules_module.score_table(saved, chosen) == rows
