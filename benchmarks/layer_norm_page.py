"""Write ``docs/results/td3bc_layer_norm.md``: TD3+BC λ = 0 and O3SRL on BallRun (κ = 5, 100k steps) with plain and
with LayerNorm critics.

    o3srl bench benchmarks/grids/td3bc_layer_norm.toml --workers 2   # the LayerNorm runs
    python benchmarks/layer_norm_page.py

The plain-critic runs are the BallRun rows of the κ = 5 grid run before LayerNorm became the default
(``results/evidence/kappa5_bullet_plain_critics.jsonl``). Each run's
``metrics.jsonl`` is kept under ``results/evidence/`` (run directories are not committed), so the page can be rewritten
without them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cost_floor_page import _table  # the same per-seed table of final evaluations
from o3srl.io import atomic_write_text
from o3srl.results import read_rows

ROOT = Path(__file__).resolve().parent.parent
EVIDENCE = ROOT / "results" / "evidence"
KEPT = EVIDENCE / "layer_norm"
PLAIN = EVIDENCE / "kappa5_bullet_plain_critics.jsonl"
NORMED = EVIDENCE / "td3bc_layer_norm.jsonl"
TASK = "OfflineBallRun-v0"
STEPS = (20_000, 40_000, 60_000, 80_000, 90_000, 100_000)
# (algorithm in the plain grid, algorithm in the LayerNorm grid, name on the page)
PAIRS = (("td3bc-lambda0", "td3bc-lambda0-ln", "TD3+BC λ = 0"), ("o3srl", "o3srl-ln", "O3SRL"))


def _rows(path: Path, algorithm: str, layer_norm: bool) -> list[dict]:
    rows = [r for r in read_rows(path) if r.get("status") == "ok" and r["task"] == TASK and r["algorithm"] == algorithm]
    assert all(r["config"]["td3bc"].get("critic_layer_norm", False) is layer_norm for r in rows), (path, algorithm)
    return sorted(rows, key=lambda r: r["seed"])


def _metrics(row: dict) -> Path | None:
    """The run's metrics file, copied into the evidence folder the first time it is seen."""
    if row["algorithm"] == "o3srl":  # kept already for the cost-floor page
        kept = EVIDENCE / f"ballrun_o3srl_100k_cost_floor_s{row['seed']}.metrics.jsonl"
    else:
        kept = KEPT / f"{row['cell_id']}.metrics.jsonl"
    source = Path(row["run_dir"]) / "metrics.jsonl"
    if not kept.exists() and source.exists():
        atomic_write_text(kept, source.read_text())
    return kept if kept.exists() else None


def _windows(name: str, critics: str, rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        path = _metrics(r)
        if path is None:
            continue
        by_step = {w["step"]: w for w in map(json.loads, path.read_text().splitlines())}
        cells = [f"{by_step[s]['q/reward']:.0f} / {by_step[s]['q/cost']:.0f}" if s in by_step else "–" for s in STEPS]
        out.append(f"| {name} | {critics} | {r['seed']} | " + " | ".join(cells) + " |")
    return out


def _summary(rows: list[dict]) -> str:
    if not rows:
        return "not run"
    safe = sum(bool(r["metrics"]["eval/safe"]) for r in rows)
    reward = np.mean([r["metrics"]["eval/normalized_reward"] for r in rows])
    cost = np.mean([r["metrics"]["eval/normalized_cost"] for r in rows])
    return f"{safe}/{len(rows)} safe, normalized reward {reward:.3f}, normalized cost {cost:.2f}"


def main() -> None:
    runs = {
        (plain_alg, ln): _rows(NORMED if ln else PLAIN, ln_alg if ln else plain_alg, ln)
        for plain_alg, ln_alg, _ in PAIRS
        for ln in (False, True)
    }
    sha = next(r["dataset_sha256"] for rows in runs.values() for r in rows)
    lines = [
        "# LayerNorm critics for TD3+BC: BallRun, κ = 5, 100k steps",
        "",
        "Commands: `o3srl bench benchmarks/grids/kappa5_bullet.toml --tasks OfflineBallRun-v0` with plain critics "
        "(the default then; rows in `results/evidence/kappa5_bullet_plain_critics.jsonl`) and `o3srl bench "
        "benchmarks/grids/td3bc_layer_norm.toml` (the same cells with `td3bc.critic_layer_norm = true`, the default "
        "since); page written by `python benchmarks/layer_norm_page.py`.  ",
        f"Machine: x86_64, 2 cores, two cells side by side; date: 2026-11-27. Dataset: `o3srl data make "
        f"OfflineBallRun-v0` (sha256 `{sha[:16]}…`, the same file for every run). Evaluation: 20 episodes of the "
        "last iterate; normalized reward uses DSRL's reference scores [26.34, 1327.4]; R*_data(5) = the dataset's "
        "best episode reward with cost ≤ 5.",
        "",
        "| algorithm | critics | seed | reward | cost | normalized reward | normalized cost | reward / R*_data(5) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for plain_alg, _, name in PAIRS:
        for ln in (False, True):
            lines += _table(runs[(plain_alg, ln)], f"{name} | {'LayerNorm' if ln else 'plain'}")
    lines += [
        "",
        "Critic estimates over training (`q/reward / q/cost` of `metrics.jsonl`: the mean of the twin critics at the "
        "dataset's state–action pairs of a batch, in the critics' units: reward × 0.1, cost × 1). A discounted "
        "return of BallRun's 0/1 step costs cannot exceed 1 / (1 − γ) = 100, nor one of the scaled reward "
        "0.1 × 21.5 / (1 − γ) = 215 (21.5: the dataset's largest step reward).",
        "",
        "| algorithm | critics | seed | " + " | ".join(f"{s // 1000}k" for s in STEPS) + " |",
        "|---|---|---|" + "---|" * len(STEPS),
    ]
    for plain_alg, _, name in PAIRS:
        for ln in (False, True):
            lines += _windows(name, "LayerNorm" if ln else "plain", runs[(plain_alg, ln)])
    lines += ["", "Summary:", ""]
    for plain_alg, _, name in PAIRS:
        for ln in (False, True):
            lines.append(f"- {name}, {'LayerNorm' if ln else 'plain'} critics: {_summary(runs[(plain_alg, ln)])}.")
    lines += [
        "",
        "Reading: with plain critics the unconstrained oracle's critics leave the range any return of this data can "
        "have after ≈ 80k steps, and its last iterate is then neither good nor cheap; with LayerNorm they stay in "
        "range and λ = 0 gives what an unconstrained policy should (high reward at high cost). O3SRL, whose "
        "shaped objective keeps the actor near the data, is safe either way at nearly the same reward. Since "
        "O3SRL and its baselines share one oracle, LayerNorm critics became the TD3+BC default "
        "(`--td3bc.no-critic-layer-norm` restores the plain ones).",
        "",
    ]
    atomic_write_text(ROOT / "docs" / "results" / "td3bc_layer_norm.md", "\n".join(lines))


if __name__ == "__main__":
    main()
