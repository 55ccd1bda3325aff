"""Write ``docs/results/ballrun_cost_floor.md``: O3SRL on BallRun (κ = 5, 100k steps) without and with the cost floor.

    python benchmarks/cost_floor_page.py

Reads the κ = 5 grid's rows run before the floor became the default (``results/evidence/``, with the per-window
metrics of those runs) and the O3SRL rows of the κ = 5 grid run with the floor on (plain critics; kept in
``results/evidence/kappa5_bullet_plain_critics.jsonl`` since LayerNorm critics became the default).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from o3srl.io import atomic_write_text
from o3srl.results import read_rows

ROOT = Path(__file__).resolve().parent.parent
EVIDENCE = ROOT / "results" / "evidence"
BEFORE = EVIDENCE / "ballrun_o3srl_100k_no_cost_floor.jsonl"
AFTER = EVIDENCE / "kappa5_bullet_plain_critics.jsonl"
TASK = "OfflineBallRun-v0"
STEPS = (10_000, 30_000, 50_000, 70_000, 80_000, 90_000, 100_000)


def _rows(path: Path, floor: bool) -> list[dict]:
    rows = [r for r in read_rows(path) if r.get("status") == "ok" and r["task"] == TASK and r["algorithm"] == "o3srl"]
    assert all(r["config"]["td3bc"]["cost_floor"] is floor for r in rows), path
    return sorted(rows, key=lambda r: r["seed"])


def _table(rows: list[dict], name: str) -> list[str]:
    out = []
    for r in rows:
        m = r["metrics"]
        out.append(
            f"| {name} | {r['seed']} | {m['eval/reward']:.1f} | {m['eval/cost']:.1f} | "
            f"{m['eval/normalized_reward']:.3f} | {m['eval/normalized_cost']:.2f}"
            f"{'' if m['eval/safe'] else ' **unsafe**'} | {m['eval/frontier_fraction']:.3f} |"
        )
    return out


def _window_rows(floor: str, seed: int, metrics: Path) -> list[str]:
    """Table rows of the logging windows at ``STEPS`` from one run's metrics file."""
    return [
        f"| {floor} | {seed} | {row['step']} | {row['feedback/cost_estimate']:.2f} | {row['q/cost']:.2f} | "
        f"{row['bandit/lambda_mean']:.2f} | {row['bandit/p/0']:.2f} | {row['bandit/p/4']:.2f} |"
        for row in map(json.loads, metrics.read_text().splitlines())
        if row["step"] in STEPS
    ]


def main() -> None:
    before, after = _rows(BEFORE, False), _rows(AFTER, True)
    lines = [
        "# The cost floor: O3SRL on BallRun, κ = 5, 100k steps, without and with `max(Q_c, 0)`",
        "",
        "Command: `o3srl bench benchmarks/grids/kappa5_bullet.toml --tasks OfflineBallRun-v0` (default O3SRL: "
        "TD3+BC oracle, K = 5, C = 5, M = 10, EXP3, shaped feedback, osrl budget), once before the cost floor became "
        "the default (rows and per-window metrics kept in `results/evidence/`) and once after (the O3SRL rows of "
        "`results/evidence/kappa5_bullet_plain_critics.jsonl`); page written by `python benchmarks/cost_floor_page.py`. "
        "Both runs predate LayerNorm critics (`--td3bc.no-critic-layer-norm` reproduces them).  ",
        "Machine: x86_64, 2 cores, two cells side by side; date: 2026-11-27. Dataset: `o3srl data make "
        f"OfflineBallRun-v0` (sha256 `{after[0]['dataset_sha256'][:16]}…`, the same file for both). Evaluation: "
        "20 episodes of the last iterate; normalized reward uses DSRL's reference scores [26.34, 1327.4]; "
        "R*_data(5) = the dataset's best episode reward with cost ≤ 5.",
        "",
        "| cost floor | seed | reward | cost | normalized reward | normalized cost | reward / R*_data(5) |",
        "|---|---|---|---|---|---|---|",
        *_table(before, "off"),
        *_table(after, "on"),
        "",
        "What went wrong without the floor (per logging window of `metrics.jsonl`): Ĉ is the critics' cost estimate "
        "at the dataset's initial states and the policy's own actions, `q/cost` the cost critic at the dataset's "
        "actions; the value budget B is 3.17. The actor maximises `Q_r − λ Q_c`, so it seeks actions where the cost "
        "critic extrapolates below zero; Ĉ then tells the bandit the policy is far inside the budget, probability "
        "moves to the small λ-arms, and the last iterate runs unsafe.",
        "",
        "| cost floor | seed | step | Ĉ | q/cost | mean λ | p(λ = 0) | p(λ = 5) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in before:
        lines += _window_rows(
            "off", r["seed"], EVIDENCE / f"ballrun_o3srl_100k_no_cost_floor_s{r['seed']}.metrics.jsonl"
        )
    for r in after:
        # The run's own metrics, kept beside the evidence so that the page can be rewritten without the run directory.
        kept = EVIDENCE / f"ballrun_o3srl_100k_cost_floor_s{r['seed']}.metrics.jsonl"
        if not kept.exists() and (Path(r["run_dir"]) / "metrics.jsonl").exists():
            atomic_write_text(kept, (Path(r["run_dir"]) / "metrics.jsonl").read_text())
        if kept.exists():
            lines += _window_rows("on", r["seed"], kept)
    summary = []
    for name, rows in (("without the floor", before), ("with it", after)):
        safe = [r for r in rows if r["metrics"]["eval/safe"]]
        mean = (
            f", mean reward of the safe seeds {np.mean([r['metrics']['eval/reward'] for r in safe]):.1f}"
            if safe
            else ""
        )
        summary.append(f"{name} {len(safe)}/{len(rows)} seeds safe{mean}")
    lines += [
        "",
        f"Summary: {'; '.join(summary)}. With the floor Ĉ stays at or just above 0 (the true cost of these policies "
        "is 0), so it no longer tells the bandit that the policy has slack to spend far beyond the budget, and no "
        "seed's probability mass collapses onto λ = 0.",
        "",
    ]
    atomic_write_text(ROOT / "docs" / "results" / "ballrun_cost_floor.md", "\n".join(lines))


if __name__ == "__main__":
    main()
