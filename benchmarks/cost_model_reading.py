"""What the adaptive λ-player's cost reading costs and how much of it is needed, measured on finished runs.

The player reads Ĉ every round from rollouts of the current policy in its learned cost model: T steps (the episode
length) from 16 fixed dataset initial states under each of 5 members. For each run directory given, this script
reports, side by side in one process:

- the time of one reading against the time of one round's M oracle steps (the reading's share of a round);
- the reading from fewer initial states (2, 4, 8, drawn as the run draws its 16) against the full one, for every
  member of the run's tail mixture: the largest difference in units of κ, and the spread of the reading across
  initial states and across the model's members;
- how fast Ĉ moves from round to round: the run is continued for ``--rounds`` rounds from its last checkpoint
  (same learner, same data, Ĉ read every round) and the mean |Ĉ_t − Ĉ_{t−N}| / κ is given for lags N, which says
  how stale a reading taken every N rounds would be.

    python benchmarks/cost_model_reading.py runs/bench/kappa_response_probe18/OfflineCarCircle-v0__o3srl__k5__s0 \\
        --out docs/results/cost_model_reading.md

Runs single-threaded (one core, as the grid's workers do). Rows are appended to ``--rows`` as each run finishes, so
a killed call resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

SUBSETS = (2, 4, 8)
LAGS = (1, 2, 5, 10, 30)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run directories of the adaptive λ-player (cost_estimate model)")
    p.add_argument("--rounds", type=int, default=200, help="rounds to continue each run for the lag analysis")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per timing; the best counts")
    p.add_argument("--rows", type=Path, default=Path("results/evidence/cost_model_reading.jsonl"))
    p.add_argument("--out", type=Path, default=None, help="write the Markdown page here")
    return p.parse_args(argv)


def _best_seconds(calls: dict[str, Any], repeats: int) -> dict[str, float]:
    """The best time of each call over ``repeats`` rounds in which the calls alternate (each compiled first): on a
    shared machine, load that comes and goes then falls on all of them alike."""
    import jax

    for call in calls.values():
        jax.block_until_ready(call())
    best = {name: float("inf") for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            t = time.perf_counter()
            jax.block_until_ready(call())
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def measure(run_dir: Path, rounds: int, repeats: int) -> dict[str, Any]:
    import jax
    import numpy as np

    from o3srl.data.sampler import sample_init_obs, to_device
    from o3srl.errors import O3SRLError
    from o3srl.train import load_finished_run

    fr = load_finished_run(run_dir)
    lrn = fr.learner
    if getattr(lrn, "cost_model", None) is None:
        raise O3SRLError(f"{run_dir}: not a run of the adaptive λ-player with a cost model")
    data = to_device(fr.problem.dataset, fr.stats)
    horizon = lrn.setting.episode_length
    states = lrn.cost_model.config.rollout_states
    kappa = float(fr.cfg.cost_limit)
    init_all = sample_init_obs(jax.random.PRNGKey(0), data, states)  # the run's own initial states
    subsets = {k: sample_init_obs(jax.random.PRNGKey(0), data, k) for k in SUBSETS if k < states}
    read = jax.jit(
        lambda actor, init: lrn.cost_model.episode_cost(fr.state.model, lambda o: lrn.act(actor, o), init, horizon)
    )

    # Timing: one reading against one round (M oracle steps plus the reading and the bandit).
    actor = fr.state.oracle.actor
    one_round = jax.jit(lrn.run_rounds, static_argnums=2)
    times = _best_seconds(
        {"read": lambda: read(actor, init_all), "round": lambda: one_round(fr.state, data, 1)[0]}, repeats
    )
    t_read, t_round = times["read"], times["round"]

    # Fewer initial states, for every member of the tail mixture.
    members = [jax.tree.map(lambda x, j=j: x[j], fr.state.tail) for j in range(lrn.tail_members)]
    diffs: dict[int, float] = {k: 0.0 for k in subsets}
    state_sd, member_sd, full_readings = [], [], []
    for m in members:
        full = np.asarray(read(m, init_all))  # (members, states)
        full_readings.append(float(full.mean()))
        state_sd.append(float(full.mean(axis=0).std()))
        member_sd.append(float(full.mean(axis=1).std()))
        for k, init in subsets.items():
            diffs[k] = max(diffs[k], abs(float(np.asarray(read(m, init)).mean()) - full_readings[-1]))

    # Round-to-round movement of Ĉ: continue the run.
    _, metrics = one_round(fr.state, data, rounds)
    c = np.asarray(metrics["feedback/cost_estimate"], np.float64)
    lags = {n: float(np.mean(np.abs(c[n:] - c[:-n]))) / kappa for n in LAGS if n < len(c)}
    return {
        "run": run_dir.name,
        "task": fr.cfg.task,
        "kappa": kappa,
        "episode_length": horizon,
        "rollout_states": states,
        "members": lrn.cost_model.config.members,
        "steps_per_round": lrn.steps_per_round,
        "reading_seconds": t_read,
        "round_seconds": t_round,
        "tail_readings": full_readings,
        "subset_max_diff_over_kappa": {str(k): v / kappa for k, v in diffs.items()},
        "state_sd_over_kappa": float(np.mean(state_sd)) / kappa,
        "member_sd_over_kappa": float(np.mean(member_sd)) / kappa,
        "continued_rounds": int(len(c)),
        "continued_mean_over_kappa": float(c.mean()) / kappa,
        "continued_sd_over_kappa": float(c.std()) / kappa,
        "lag_mean_abs_diff_over_kappa": {str(n): v for n, v in lags.items()},
    }


def write_page(rows: list[dict[str, Any]], out: Path, command: str) -> None:
    import jax

    short = lambda r: r["run"].replace("Offline", "").replace("-v0__o3srl__", " ").replace("__", " ")
    lines = [
        "# The adaptive λ-player's cost reading: its price and how much of it is needed",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores visible, single-threaded XLA (one core), other jobs "
        f"running beside it; jax {jax.__version__}, Python {platform.python_version()}; date: "
        f"{time.strftime('%Y-%m-%d')}  ",
        "Runs: the finished runs named in each row (their last checkpoints, their own datasets and cost models).",
        "",
        "## Price: one reading against one round",
        "",
        "| run | T | states × members | one reading, ms | one round (M steps + reading + bandit), ms | reading / "
        "round |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {short(r)} | {r['episode_length']} | {r['rollout_states']} × {r['members']} | "
            f"{1e3 * r['reading_seconds']:.0f} | {1e3 * r['round_seconds']:.0f} | "
            f"{r['reading_seconds'] / r['round_seconds']:.2f} |"
        )
    lines += [
        "",
        "## Fewer initial states: the largest change of the reading over the tail members, in units of κ",
        "",
        "| run | " + " | ".join(f"{k} states" for k in SUBSETS) + " | spread across states / κ | spread across "
        "members / κ |",
        "|---|" + "---|" * (len(SUBSETS) + 2),
    ]
    for r in rows:
        d = r["subset_max_diff_over_kappa"]
        lines.append(
            f"| {short(r)} | "
            + " | ".join(f"{d[str(k)]:.2f}" if str(k) in d else "—" for k in SUBSETS)
            + f" | {r['state_sd_over_kappa']:.2f} | {r['member_sd_over_kappa']:.2f} |"
        )
    lines += [
        "",
        "## Round to round: mean |Ĉ_t − Ĉ_{t−N}| / κ while the run continues",
        "",
        "| run | rounds | mean Ĉ / κ | sd of Ĉ / κ | " + " | ".join(f"N = {n}" for n in LAGS) + " |",
        "|---|---|---|---|" + "---|" * len(LAGS),
    ]
    for r in rows:
        lag = r["lag_mean_abs_diff_over_kappa"]
        lines.append(
            f"| {short(r)} | {r['continued_rounds']} | {r['continued_mean_over_kappa']:.2f} | "
            f"{r['continued_sd_over_kappa']:.2f} | "
            + " | ".join(f"{lag[str(n)]:.2f}" if str(n) in lag else "—" for n in LAGS)
            + " |"
        )
    lines.append("")
    text = "\n".join(lines)
    marker = "<!-- cost_model_reading.py end -->"
    if out.exists() and marker in out.read_text():
        text += marker + out.read_text().split(marker, 1)[1]
    else:
        text += marker + "\n"
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(out)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from o3srl.bench import SINGLE_THREAD_ENV

    os.environ.update(SINGLE_THREAD_ENV)  # before JAX starts
    args.rows.parent.mkdir(parents=True, exist_ok=True)
    done = {}
    if args.rows.exists():
        for line in args.rows.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done[row["run"]] = row
    for run in args.runs:
        name = Path(run).name
        if name in done:
            continue
        row = measure(Path(run), args.rounds, args.repeats)
        done[name] = row
        with args.rows.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps({k: row[k] for k in ("run", "reading_seconds", "round_seconds")}), flush=True)
    if args.out is not None:
        command = "python benchmarks/cost_model_reading.py " + " ".join(argv if argv is not None else sys.argv[1:])
        write_page([done[Path(r).name] for r in args.runs], args.out, command)


if __name__ == "__main__":
    main()
