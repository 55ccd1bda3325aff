"""Write docs/results/baselines_validation.md: our baselines (``o3srl bench`` rows) against OSRL's own
implementations (``benchmarks/osrl_reference.py`` rows) on the same dataset files, κ, seeds, steps and evaluation.

    python benchmarks/baselines_validation.py \\
        --grid benchmarks/grids/baselines_validation.toml \\
        --ours results/baselines_validation.jsonl --osrl results/baselines_validation_osrl.jsonl \\
        --out docs/results/baselines_validation.md

Rows are matched by cell id (task, algorithm, κ, seed). A pair is compared only when both sides trained the same
number of steps on the same file (sha256) and were evaluated on the same episodes (count and seed); other pairs are
listed as mismatched. Per (task, algorithm), the difference of the seed means, Δ = ours − OSRL, is set against the
seeds' spread: SE = √(s²_ours / n_ours + s²_OSRL / n_OSRL) from the two sides' standard deviations over seeds, and a
difference counts as beyond the spread when |Δ| > 2 SE (a rough two-sided 95 % bound; with 3 seeds a side, read it
as a flag, not a test). Needs only the standard library.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import math
import statistics
import tomllib
from pathlib import Path
from typing import Any

LABELS = {
    "bc-all": "BC-All",
    "bc-safe": "BC-Safe",
    "bcq-lag": "BCQ-Lag",
    "bear-lag": "BEAR-Lag",
    "cpq": "CPQ",
    "coptidice": "COptiDICE",
}
NR, NC = "eval/normalized_reward", "eval/normalized_cost"

REPRODUCE = """\
Our side (the project's environment):

```bash
o3srl bench benchmarks/grids/baselines_validation.toml --workers 1 --adopt results/kappa_response_bc.jsonl
```

(`--adopt` reuses the BC cells of `kappa_response_bc` that have the same settings, instead of training them again.)

OSRL's side, in a separate Python 3.11 environment (osrl-lib 0.1.0 without its pins, which do not install on
Python 3.11: `torch~=1.13.0` resolves to an 887 MB CUDA build and `wandb~=0.14.0` needs `pathtools`, which has no
wheel; `dsrl` and `fast-safe-rl` would pull in MuJoCo, MetaDrive and tianshou, none of which training needs):

```bash
python3.11 -m venv .venv-osrl
.venv-osrl/bin/pip install --upgrade pip
.venv-osrl/bin/pip install -r benchmarks/osrl_requirements.txt   # torch==2.13.0 (CPU), numpy, scipy, ...
.venv-osrl/bin/pip install -e .                                  # o3srl: loader, environments, evaluator
.venv-osrl/bin/pip install --no-deps osrl-lib==0.1.0
.venv-osrl/bin/python benchmarks/osrl_reference.py check-configs --osrl-repo PATH/TO/OSRL   # optional
.venv-osrl/bin/python benchmarks/osrl_reference.py grid benchmarks/grids/baselines_validation.toml
```

Both are resumable (a finished cell is skipped); OSRL's side can be split over processes with `--tasks`,
`--algorithms` and `--seeds` (they append to the same file under a lock). Then:

```bash
python benchmarks/baselines_validation.py
```
"""

DIFFERENCES = """\
What necessarily differs between the two pipelines, beyond the implementations themselves (each algorithm's page in
`docs/algorithms/` lists its deliberate deviations from OSRL's code, which are what this comparison measures):

- **Data.** Both read the same HDF5 file with o3srl's loader. OSRL's scripts pass it through DSRL's
  `pre_process_data` with their defaults (no density filter, no Pareto augmentation, no noise or outliers), which
  is the identity on a file whose last transition ends an episode (o3srl's loader requires that), so it is skipped.
  OSRL trains on raw observations; our algorithms normalise observations with the data's mean and standard deviation
  (`normalize_obs = true`, every algorithm's default here). BC-Safe keeps the same episodes on both sides
  (undiscounted cost return ≤ κ).
- **Minibatches.** OSRL draws each of the 512 transitions of a batch with `np.random.choice` inside a torch
  `DataLoader` (its scripts: 8 worker processes; here 0, one process per cell, 1 torch thread); ours draw with
  JAX's generator. Both are i.i.d. uniform draws; the random streams, and so the individual runs, differ.
- **Terminals.** OSRL's `done` is `terminals | timeouts` (its reward critics stop bootstrapping at the time limit;
  its cost critics ignore `done`); ours stop at terminals only.
- **Thresholds.** OSRL's models compute their thresholds from `cost_limit` = κ and the episode length:
  `qc_thres` = κ (1 − γ^T) / ((1 − γ) T) for BCQ-Lag, BEAR-Lag and COptiDICE, and CPQ's `qc_scalar` × that.
  Ours use the same B under the default `osrl` budget convention, except COptiDICE, which constrains the stationary
  per-step cost (1 − γ) B (docs/algorithms/coptidice.md): OSRL's COptiDICE threshold is 100 times looser.
- **Evaluation.** Both sides are scored by o3srl's evaluator on o3srl's environment, with the same episode count and
  seeds and DSRL's reference scores. The final iterate is evaluated on both sides (OSRL's scripts also save a "best"
  checkpoint chosen by evaluation returns; it is not used). The evaluated policy is deterministic on both sides for
  BC, BEAR-Lag, CPQ and COptiDICE (tanh of the Gaussian's mean); for BCQ-Lag, OSRL's `act` draws a fresh VAE latent
  z per action (a stochastic policy, reproduced here), ours evaluates z = 0.
- **Steps.** The grid's steps on both sides (100k); OSRL's BEAR-Lag config asks for 300k.
"""


def read_rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        if line.strip():
            with contextlib.suppress(json.JSONDecodeError):  # a line torn by a crash
                rows.append(json.loads(line))
    return rows


def latest_ok(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r.get("status") == "ok":
            out[r["cell_id"]] = r
    return out


def settings(row: dict[str, Any], side: str) -> tuple:
    if side == "osrl":
        return (row.get("steps"), row.get("eval_episodes"), row.get("eval_seed"), row.get("dataset_sha256"))
    cfg = row.get("config", {})
    return (row.get("steps"), cfg.get("eval_episodes"), cfg.get("eval_seed"), row.get("dataset_sha256"))


def mean_sd(xs: list[float]) -> tuple[float, float]:
    if not xs:
        return math.nan, math.nan
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else math.nan)


def fmt(m: float, s: float | None = None) -> str:
    if math.isnan(m):
        return "–"
    if s is None:
        return f"{m:.3f}"
    return f"{m:.3f} ± {s:.3f}" if not math.isnan(s) else f"{m:.3f}"


def verdict(ours: list[float], theirs: list[float]) -> tuple[str, str]:
    (mo, so), (mr, sr) = mean_sd(ours), mean_sd(theirs)
    if not ours or not theirs:
        return "–", "pending"
    delta = mo - mr
    if len(ours) < 2 or len(theirs) < 2:
        return f"{delta:+.3f}", "one seed"
    se = math.sqrt(so**2 / len(ours) + sr**2 / len(theirs))
    if se == 0:
        return f"{delta:+.3f}", "equal" if delta == 0 else "beyond spread"
    return f"{delta:+.3f} ({abs(delta) / se:.1f} SE)", "within spread" if abs(delta) <= 2 * se else "beyond spread"


def seconds(row: dict[str, Any] | None) -> str:
    value = row.get("train_seconds") if row else None
    return f"{value:.0f}" if isinstance(value, (int, float)) else "–"


def date_range(rows: list[dict[str, Any]]) -> str:
    starts = sorted(r["started_at"] for r in rows if r.get("started_at"))
    ends = sorted(r["finished_at"] for r in rows if r.get("finished_at"))
    return f"{starts[0]} – {ends[-1]}" if starts and ends else "–"


def write_page(grid_path: Path, ours_path: Path, osrl_path: Path, out: Path) -> str:
    grid = tomllib.loads(grid_path.read_text())
    tasks, seeds, kappas = grid["tasks"], grid["seeds"], grid["cost_limits"]
    algorithms = list(grid["algorithms"])
    ours_rows, osrl_rows = read_rows(ours_path), read_rows(osrl_path)
    ours, osrl = latest_ok(ours_rows), latest_ok(osrl_rows)

    pairs: dict[tuple[str, str, float], list[tuple[int, dict | None, dict | None]]] = {}
    mismatched, missing = [], []
    for task in tasks:
        for alg in algorithms:
            for kappa in kappas:
                cells = []
                for seed in seeds:
                    cid = f"{task}__{alg}__k{kappa:g}__s{seed}"
                    o, r = ours.get(cid), osrl.get(cid)
                    if o and r and settings(o, "ours") != settings(r, "osrl"):
                        mismatched.append(f"{cid}: ours {settings(o, 'ours')}, OSRL {settings(r, 'osrl')}")
                        o = r = None
                    if not o or not r:
                        missing.append(
                            f"{cid} ({'ours' if not o else ''}{' and ' if not o and not r else ''}{'OSRL' if not r else ''})"
                        )
                    cells.append((seed, o, r))
                pairs[(task, alg, kappa)] = cells

    lines = [
        "# Baselines against OSRL's own implementations",
        "",
        "Our BC-All, BC-Safe, BCQ-Lag, BEAR-Lag, CPQ and COptiDICE (`o3srl train --algo ...`, their defaults) and",
        "OSRL's (`osrl-lib` 0.1.0, PyTorch, its `examples/configs` defaults, driven by `benchmarks/osrl_reference.py`",
        "as its `examples/train/train_<algo>.py` drive them) trained on the same dataset files with the same κ, seeds",
        f"and steps, and scored by the same evaluator. Grid: `{grid_path}` ({', '.join(tasks)}; κ = "
        f"{', '.join(f'{k:g}' for k in kappas)}; seeds {', '.join(map(str, seeds))}; "
        f"{grid.get('defaults', {}).get('steps', '?')} steps; {grid.get('defaults', {}).get('eval_episodes', '?')} "
        "evaluation episodes). Normalised reward and cost are DSRL's (cost normalised by κ; safe ⇔ ≤ 1).",
        "",
        f"Page written {_dt.datetime.now(_dt.UTC).strftime('%Y-%m-%d %H:%M UTC')} by `benchmarks/baselines_validation.py`.",
        "",
        "## Machines and dates",
        "",
    ]
    if osrl_rows:
        machines = sorted({f"{r.get('host')}: {r.get('machine')}" for r in osrl.values()})
        versions = sorted(
            {
                f"osrl-lib {r.get('osrl_version')}, torch {r.get('torch_version')}, Python {r.get('python')}, "
                f"{r.get('threads', 1)} thread(s), {r.get('device', 'cpu')}"
                for r in osrl.values()
            }
        )
        policies = sorted(
            {f"{LABELS.get(r['algorithm'], r['algorithm'])}: {r.get('eval_policy')}" for r in osrl.values()}
        )
        lines += [
            f"- OSRL's side: {'; '.join(machines) or '–'}; {'; '.join(versions) or '–'}; runs {date_range(list(osrl.values()))}.",
            f"- OSRL's evaluated policies: {'; '.join(policies)}.",
        ]
    else:
        lines += ["- OSRL's side: no rows yet."]
    if ours_rows:
        hosts = sorted({str(r.get("host")) for r in ours.values()})
        vers = sorted({str(r.get("o3srl_version")) for r in ours.values()})
        lines += [
            f"- Our side: host {', '.join(hosts)}; o3srl {', '.join(vers)}; runs {date_range(list(ours.values()))}."
        ]
    else:
        lines += ["- Our side: no rows yet."]
    lines += ["", "## Summary (mean ± standard deviation over seeds)", ""]
    lines += [
        "| task | algorithm | κ | seeds (ours / OSRL) | reward, ours | reward, OSRL | Δ reward | vs seeds | cost, ours | cost, OSRL | Δ cost | vs seeds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (task, alg, kappa), cells in pairs.items():
        o_r = [o["metrics"][NR] for _, o, r in cells if o and r]
        r_r = [r["metrics"][NR] for _, o, r in cells if o and r]
        o_c = [o["metrics"][NC] for _, o, r in cells if o and r]
        r_c = [r["metrics"][NC] for _, o, r in cells if o and r]
        dr, vr = verdict(o_r, r_r)
        dc, vc = verdict(o_c, r_c)
        lines.append(
            f"| {task} | {LABELS.get(alg, alg)} | {kappa:g} | {len(o_r)} / {len(r_r)} | {fmt(*mean_sd(o_r))} | "
            f"{fmt(*mean_sd(r_r))} | {dr} | {vr} | {fmt(*mean_sd(o_c))} | {fmt(*mean_sd(r_c))} | {dc} | {vc} |"
        )
    lines += [
        "",
        "Δ = ours − OSRL; SE = √(s²_ours / n + s²_OSRL / n) from the seeds' standard deviations; *beyond spread*:",
        "|Δ| > 2 SE (a flag, with 3 seeds a side, not a test).",
        "",
        "## Per seed",
        "",
        "| task | algorithm | seed | reward, ours | reward, OSRL | cost, ours | cost, OSRL | train s, ours | train s, OSRL |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (task, alg, _kappa), cells in pairs.items():
        for seed, o, r in cells:
            if not o and not r:
                continue
            lines.append(
                f"| {task} | {LABELS.get(alg, alg)} | {seed} | "
                f"{fmt(o['metrics'][NR]) if o else '–'} | {fmt(r['metrics'][NR]) if r else '–'} | "
                f"{fmt(o['metrics'][NC]) if o else '–'} | {fmt(r['metrics'][NC]) if r else '–'} | "
                f"{seconds(o)} | {seconds(r)} |"
            )
    if mismatched:
        lines += ["", "## Pairs left out (settings differ)", ""] + [f"- {m}" for m in mismatched]
    if missing:
        lines += ["", f"## Cells still missing ({len(missing)})", ""] + [f"- {m}" for m in missing]
    lines += ["", "## What differs between the pipelines", "", DIFFERENCES.rstrip(), "", "## How to reproduce", ""]
    lines += [REPRODUCE.rstrip(), ""]
    text = "\n".join(lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", default="benchmarks/grids/baselines_validation.toml")
    p.add_argument("--ours", default="results/baselines_validation.jsonl")
    p.add_argument("--osrl", default="results/baselines_validation_osrl.jsonl")
    p.add_argument("--out", default="docs/results/baselines_validation.md")
    a = p.parse_args()
    write_page(Path(a.grid), Path(a.ours), Path(a.osrl), Path(a.out))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
