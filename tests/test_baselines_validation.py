"""benchmarks/baselines_validation.py on made-up rows: pairs are matched by cell id, compared only under equal
settings, and the difference of the seed means is set against the seeds' spread."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "baselines_validation.py"

GRID = """
name = "tiny"
tasks = ["OfflineBallRun-v0"]
cost_limits = [5]
seeds = [0, 1, 2]
[defaults]
steps = 100
eval_episodes = 2
[algorithms.bc-all]
algo = "bc-all"
[algorithms.cpq]
algo = "cpq"
"""


def _module():
    spec = importlib.util.spec_from_file_location("baselines_validation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(side: str, alg: str, seed: int, reward: float, cost: float, sha: str = "abc") -> dict:
    row = {
        "cell_id": f"OfflineBallRun-v0__{alg}__k5__s{seed}",
        "algorithm": alg,
        "status": "ok",
        "steps": 100,
        "dataset_sha256": sha,
        "metrics": {"eval/normalized_reward": reward, "eval/normalized_cost": cost},
        "train_seconds": 1.0,
    }
    if side == "osrl":
        row.update(eval_episodes=2, eval_seed=10_000, eval_policy="deterministic")
    else:
        row["config"] = {"eval_episodes": 2, "eval_seed": 10_000}
    return row


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_pairs_are_compared_against_the_seed_spread(tmp_path):
    bv = _module()
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID)
    ours = [_row("ours", "bc-all", s, 0.50 + 0.01 * s, 0.0) for s in range(3)]
    ours += [_row("ours", "cpq", s, 0.90 + 0.01 * s, 1.0) for s in range(3)]
    osrl = [_row("osrl", "bc-all", s, 0.51 + 0.01 * s, 0.0) for s in range(3)]
    osrl += [_row("osrl", "cpq", s, 0.20 + 0.01 * s, 1.0, sha="other" if s == 2 else "abc") for s in range(3)]
    _write(tmp_path / "ours.jsonl", ours)
    _write(tmp_path / "osrl.jsonl", osrl)
    text = bv.write_page(grid, tmp_path / "ours.jsonl", tmp_path / "osrl.jsonl", tmp_path / "page.md")

    bc = next(line for line in text.splitlines() if line.startswith("| OfflineBallRun-v0 | BC-All | 5 |"))
    assert "| 3 / 3 |" in bc and "within spread" in bc and "| equal |" in bc
    cpq = next(line for line in text.splitlines() if line.startswith("| OfflineBallRun-v0 | CPQ | 5 |"))
    assert "| 2 / 2 |" in cpq and "beyond spread" in cpq  # seed 2 left out: its dataset differs
    assert "OfflineBallRun-v0__cpq__k5__s2: ours" in text  # listed among the mismatched pairs
    assert (tmp_path / "page.md").read_text() == text


def test_verdict():
    bv = _module()
    assert bv.verdict([0.5, 0.6, 0.55], [0.5, 0.52, 0.58])[1] == "within spread"
    assert bv.verdict([0.9, 0.92, 0.91], [0.5, 0.52, 0.58])[1] == "beyond spread"
    assert bv.verdict([0.0] * 3, [0.0] * 3)[1] == "equal"
    assert bv.verdict([0.5], [0.4])[1] == "one seed"
    assert bv.verdict([], [0.4])[1] == "pending"
