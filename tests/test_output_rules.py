"""benchmarks/output_rules.py: the two-member mixture on the readings by hand, and the script on a tiny finished run
of the toy task (each rule's score is the mean of its members' evaluations; a saved table scores the same)."""

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


def test_hull_members_by_hand(rules_module):
    hull = rules_module.hull_members
    readings = np.array(
        [
            [100.0, 0.0, 0.0, 1.0],
            [150.0, 2.0, 1.0, 1.0],
            [400.0, 20.0, 5.0, 1.0],
            [300.0, 12.0, 0.0, 1.0],
            [900.0, 25.0, 0.0, 0.0],  # never read: never chosen
        ]
    )
    # Target 8, k = 0, 10 slots. Pairs (safe i, above j): (0, 2): n ≤ 10 · 8 / 20 = 4 → (4 · 400 + 6 · 100) / 10 =
    # 220; (1, 2): n ≤ 10 · 6 / 18 → 3 → (1200 + 1050) / 10 = 225; (0, 3): n ≤ 10 · 8 / 12 → 6 → (1800 + 400) / 10 =
    # 220; (1, 3): n ≤ 10 · 6 / 10 = 6 → (1800 + 600) / 10 = 240, the best.
    assert hull(readings, 8.0, 0.0, slots=10).tolist() == [1] * 4 + [3] * 6
    # k = 1: slot 1 reads 3, slot 2 reads 25. (1, 3): n ≤ 10 · 5 / 9 → 5 → (1500 + 750) / 10 = 225; (0, 3): 220;
    # (0, 2): n ≤ 10 · 8 / 25 → 3 → 190; (1, 2): n ≤ 10 · 5 / 22 → 2 → 200.
    assert hull(readings, 8.0, 1.0, slots=10).tolist() == [1] * 5 + [3] * 5
    # Nothing mixes into a safe single member that is already the best: target 12 with k = 0 takes slot 3 alone
    # (300 > any mixture with slot 2 read at 20: (1, 2) n ≤ 10 · 10 / 18 → 5 → 275).
    assert hull(readings, 12.0, 0.0, slots=10).tolist() == [3]
    # Nothing within the target: the lowest pessimistic cost.
    assert hull(readings, -1.0, 1.0, slots=10).tolist() == [0]
    # Whatever the target, the mixture's mean pessimistic reading is within it when any member reads safe.
    for target in (0.5, 3.0, 8.0, 15.0, 30.0):
        chosen = hull(readings, target, 1.0, slots=20)
        assert (readings[chosen, 1] + readings[chosen, 2]).mean() <= target + 1e-9


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
