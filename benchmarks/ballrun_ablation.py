"""O3SRL's open choices and the fixed-λ oracle on the built-in OfflineBallRun-v0 data (κ = 5).

Two phases, so the training can run on a machine without the simulator:

    # 1. train every variant × seed, one single-threaded process per core (resumable: finished runs are skipped)
    python benchmarks/ballrun_ablation.py train --dataset FILE.hdf5 --out runs/ablation --workers 16
    # 2. evaluate every run in the simulator and write the table
    python benchmarks/ballrun_ablation.py evaluate --out runs/ablation --md docs/results/ballrun_ablation.md

Each run is an ordinary run directory (``o3srl eval RUN_DIR`` works on it); the last iterate is evaluated.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import time
from pathlib import Path
from typing import Any

# The defaults when docs/results/ballrun_ablation.md was measured, so that every variant below reproduces its row
# whatever the project's defaults are now.
BASE: dict[str, Any] = {"o3srl.feedback": "lagrangian", "td3bc.cost_floor": False}

VARIANTS: dict[str, dict[str, Any]] = {
    "o3srl": {},
    "o3srl shaped": {"o3srl.feedback": "shaped"},
    "o3srl hedge": {"o3srl.bandit": "hedge"},
    "o3srl batch-states": {"o3srl.feedback_states": "batch"},
    "o3srl average-budget": {"budget_convention": "average"},
    "o3srl cost-max": {"td3bc.cost_target": "max"},
    "o3srl floor": {"td3bc.cost_floor": True},
    "o3srl floor hedge": {"td3bc.cost_floor": True, "o3srl.bandit": "hedge"},
    "o3srl floor shaped": {"td3bc.cost_floor": True, "o3srl.feedback": "shaped"},
    "o3srl theory": {"variant": "theory"},
    "td3bc λ=0": {"algo": "td3bc", "fixed_lambda": 0.0},
    "td3bc λ=1.25": {"algo": "td3bc", "fixed_lambda": 1.25},
    "td3bc λ=2.5": {"algo": "td3bc", "fixed_lambda": 2.5},
    "td3bc λ=5": {"algo": "td3bc", "fixed_lambda": 5.0},
}


def _slug(name: str) -> str:
    return name.replace(" ", "_").replace("λ=", "lam")


def _train_one(job: tuple[str, int, str, str, int]) -> str:
    name, seed, dataset, out, steps = job
    # One single-threaded process per core on CPU; on a GPU machine the processes share the GPU.
    os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.05")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from o3srl.config import TrainConfig, apply_overrides
    from o3srl.train import run

    run_dir = Path(out) / f"{_slug(name)}-s{seed}"
    if (run_dir / "eval.json").exists():
        return f"{name} s{seed}: done before"
    cfg = TrainConfig(
        task="OfflineBallRun-v0",
        dataset=dataset,
        cost_limit=5.0,
        seed=seed,
        steps=steps,
        eval_episodes=0,
        progress=False,
        run_dir=str(run_dir),
    )
    cfg = apply_overrides(cfg, {**BASE, **VARIANTS[name]})
    t0 = time.time()
    resume = str(run_dir) if (run_dir / "checkpoint.msgpack").exists() else None
    try:
        run(cfg, resume_dir=resume)
    except Exception as exc:  # noqa: BLE001 — report and go on: one failed run must not stop the others
        return f"{name} s{seed}: FAILED {type(exc).__name__}: {exc}"
    (run_dir / "variant.json").write_text(
        json.dumps({"variant": name, "seed": seed, "train_seconds": time.time() - t0})
    )
    return f"{name} s{seed}: {time.time() - t0:.0f} s"


def train(args: argparse.Namespace) -> None:
    names = args.variants or list(VARIANTS)
    jobs = [(n, s, str(Path(args.dataset).resolve()), args.out, args.steps) for s in args.seeds for n in names]
    with mp.get_context("spawn").Pool(args.workers) as pool:
        for line in pool.imap_unordered(_train_one, jobs):
            print(line, flush=True)


def evaluate(args: argparse.Namespace) -> None:
    import numpy as np

    from o3srl.evaluate import evaluate as rollout
    from o3srl.io import atomic_write_text
    from o3srl.policy import load_policy

    rows = []
    for run_dir in sorted(Path(args.out).iterdir()):
        meta_path = run_dir / "variant.json"
        if not meta_path.exists():
            continue
        meta = json.loads(meta_path.read_text())
        info = json.loads((run_dir / "run.json").read_text())
        res = rollout(
            load_policy(run_dir),
            "OfflineBallRun-v0",
            episodes=args.episodes,
            cost_limit=5.0,
            seed=10_000,
            num_envs=4,
            reward_range=tuple(info["reward_range"]),
            reference=info["reward_reference"],
            frontier=info["safe_frontier"],
        )
        rows.append({**meta, **res.metrics()})
        print(meta["variant"], meta["seed"], f"reward {res.reward:.1f} cost {res.cost:.1f}", flush=True)
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["variant"], []).append(r)
    lines = [
        "# O3SRL variants and fixed-λ TD3+BC on the built-in OfflineBallRun-v0 data (κ = 5)",
        "",
        f"Command: `{args.command_line}`  ",
        f"Machine: training {args.train_machine}; evaluation {platform.machine()}, {os.cpu_count()} cores; "
        f"date: {time.strftime('%Y-%m-%d')}  ",
        f"{args.steps_note}; last iterate evaluated for {args.episodes} episodes (seed 10000). Normalised reward "
        "uses DSRL's reference scores [26.34, 1327.4]; normalised cost = cost / 5; **unsafe** marks a mean normalised "
        "cost > 1. R*_data(5) is the best reward among the dataset's episodes with cost ≤ 5.",
        "",
        "| variant | seeds | reward | cost | normalized reward | normalized cost | reward / R*_data(5) | safe seeds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in VARIANTS:
        group = by.get(name)
        if not group:
            continue
        get = lambda k: np.array([g[f"eval/{k}"] for g in group], float)
        nc = get("normalized_cost")
        unsafe = " **unsafe**" if nc.mean() > 1 else ""
        frontier = np.array([g["eval/frontier_fraction"] for g in group], float)
        lines.append(
            f"| {name} | {len(group)} | {get('reward').mean():.1f} ± {get('reward').std():.1f} | "
            f"{get('cost').mean():.1f} ± {get('cost').std():.1f} | {get('normalized_reward').mean():.3f} | "
            f"{nc.mean():.2f}{unsafe} | {frontier.mean():.2f} | {int((nc <= 1).sum())}/{len(group)} |"
        )
    atomic_write_text(args.md, "\n".join(lines) + "\n")
    atomic_write_text(Path(args.md).with_suffix(".jsonl"), "".join(json.dumps(r) + "\n" for r in rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="phase", required=True)
    t = sub.add_parser("train")
    t.add_argument("--dataset", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--workers", type=int, default=os.cpu_count())
    t.add_argument("--steps", type=int, default=40_000)
    t.add_argument("--seeds", type=int, nargs="+", default=[0])
    t.add_argument("--variants", nargs="*", choices=list(VARIANTS))
    e = sub.add_parser("evaluate")
    e.add_argument("--out", required=True)
    e.add_argument("--md", required=True)
    e.add_argument("--episodes", type=int, default=20)
    e.add_argument("--command-line", default="python benchmarks/ballrun_ablation.py train/evaluate")
    e.add_argument("--train-machine", default="(not recorded)")
    e.add_argument("--steps-note", default="40,000 gradient steps")
    args = p.parse_args()
    train(args) if args.phase == "train" else evaluate(args)


if __name__ == "__main__":
    main()
