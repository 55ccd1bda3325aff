"""Gradient-step throughput of the oracles and O3SRL's overhead, measured side by side in one process.

Reports updates per second for TD3+BC and IQL at a fixed λ and inside O3SRL (bandit draw, feedback and update every
M steps), and the ratio O3SRL / oracle alone. Shapes: BallRun-sized (obs 7, act 2) and Ant-sized (obs 33, act 8)
synthetic data; 256×256 networks, batch 256, as the defaults.

    python benchmarks/speed.py --out docs/results/speed.md
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import jax
import numpy as np

from o3srl.algos.iql import IQLConfig
from o3srl.algos.o3srl import O3SRL, O3SRLConfig, Setting, make_oracle
from o3srl.algos.td3bc import TD3BCConfig
from o3srl.data import OfflineDataset
from o3srl.data.sampler import compute_norm_stats, to_device


def synthetic(obs_dim: int, act_dim: int, n: int = 50_000, T: int = 200) -> OfflineDataset:
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    return OfflineDataset({
        "observations": obs, "next_observations": obs, "actions": rng.uniform(-1, 1, (n, act_dim)),
        "rewards": rng.normal(size=n), "costs": (rng.uniform(size=n) < 0.1).astype(np.float32),
        "terminals": np.zeros(n, bool), "timeouts": np.arange(n) % T == T - 1,
    })


def throughput(oracle_name: str, fixed: float | None, ds: OfflineDataset, steps: int, repeats: int) -> float:
    data = to_device(ds, compute_norm_stats(ds))
    setting = Setting(ds.obs_dim, ds.act_dim, 5.0, 200, 100_000, 1.0, 1.0)
    learner = O3SRL(O3SRLConfig(), make_oracle(oracle_name, TD3BCConfig(), IQLConfig(), ds.obs_dim, ds.act_dim), setting, fixed_lambda=fixed)
    state = learner.init(jax.random.PRNGKey(0))
    fn = jax.jit(learner.run_rounds, static_argnums=2)
    rounds = steps // learner.steps_per_round
    state, _ = fn(state, data, rounds)
    jax.block_until_ready(state)
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        state, _ = fn(state, data, rounds)
        jax.block_until_ready(state)
        best = max(best, steps / (time.perf_counter() - t))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("docs/results/speed.md"))
    args = parser.parse_args()
    lines = [
        "# Training throughput (gradient steps per second)",
        "",
        f"Command: `python benchmarks/speed.py --steps {args.steps} --repeats {args.repeats}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}; date: {time.strftime('%Y-%m-%d')}  ",
        "Best of the repeats; each oracle measured alone at a fixed λ and inside O3SRL (K = 5, M = 10) in the same",
        "process, one after the other. 256×256 networks, batch 256, twin reward and twin cost critics.",
        "",
        "| shape | oracle | alone (steps/s) | in O3SRL (steps/s) | O3SRL / alone |",
        "|---|---|---|---|---|",
    ]
    for name, (obs, act) in {"BallRun-sized (7, 2)": (7, 2), "Ant-sized (33, 8)": (33, 8)}.items():
        ds = synthetic(obs, act)
        for oracle in ("td3bc", "iql"):
            alone = throughput(oracle, 0.0, ds, args.steps, args.repeats)
            inside = throughput(oracle, None, ds, args.steps, args.repeats)
            lines.append(f"| {name} | {oracle} | {alone:.0f} | {inside:.0f} | {inside / alone:.2f} |")
            print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
