"""The λ-player in a closed loop whose answer is known: which bandit, which λ for the oracle, which hint.

The 'policy' is a first-order lag of the cost of the λ it is trained on, ``c ← c + 0.05 (c*(λ) − c)`` with
``c*(λ) = 2 B e^{−λ}`` (λ = 0 costs twice the budget, the largest arm almost nothing), so it follows λ slowly as the
oracle's networks do. What the λ-player reads each round is not c but a reading that jumps as BallRun's estimate
does when the policy sits on either side of a cost cliff: ``Ĉ = 4 c`` with probability ¼, else 0 (mean c). The
λ-player should hold the policy's cost, averaged over the last 1,000 of 4,000 rounds, at the tightened budget
(1 − δ) B = 3.2, and the λ the policy is trained on should not be thrown about by single readings.

    python benchmarks/lambda_loop.py --out docs/results/lambda_loop.md
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import os
import platform
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from o3srl import bandits
from o3srl.io import atomic_write_text
from o3srl.report import show_markdown_table

BUDGET, MARGIN, ROUNDS, TAIL = 4.0, 0.2, 4000, 1000
ARMS = jnp.asarray(bandits.arm_grid(5, 5.0))
VARIANTS = [  # (bandit, oracle λ, hint decay ρ)
    ("exp3box", "drawn", 0.0),
    ("exp3box", "drawn", 0.95),
    ("exp3box", "mean", 0.0),
    ("exp3box", "mean", 0.95),
    ("hedgebox", "mean", 0.0),
    ("hedgebox", "mean", 0.95),
]
SPIKES = [4, 16]
"""The reading is ``s c`` with probability 1 / s, else 0."""
HINT_VIOLATIONS = [20.0, 1.0]
"""G_h of the hint (the weights always count violations up to G = 20)."""


def run(
    kind: bandits.BanditKind,
    oracle_lambda: str,
    rho: float,
    seed: int,
    spike: int = 4,
    hint_violation: float = 20.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The policy's cost and the λ it was trained on, per round."""

    def step(carry, key):
        state, cost = carry
        k_draw, k_reading = jax.random.split(key)
        probs = bandits.arm_probabilities(state, kind, 0.0, 8.0)
        arm = bandits.draw_arm(k_draw, probs)
        lam = jnp.dot(probs, ARMS) if oracle_lambda == "mean" else ARMS[arm]
        cost = cost + 0.05 * (2 * BUDGET * jnp.exp(-lam) - cost)
        reading = jnp.where(jax.random.bernoulli(k_reading, 1.0 / spike), spike * cost, 0.0)
        losses = bandits.lagrangian_feedback(ARMS, 5.0, reading, BUDGET, margin=MARGIN, max_violation=20.0)
        hint = bandits.lagrangian_feedback(ARMS, 5.0, reading, BUDGET, margin=MARGIN, max_violation=hint_violation)
        state = bandits.update_bandit(
            state, kind, arm, losses, probs, bandits.BOX_RATE, 0.0, 8.0, hint_losses=hint, hint_decay=rho
        )
        return (state, cost), (cost, lam)

    keys = jax.random.split(jax.random.PRNGKey(seed), ROUNDS)
    _, (costs, lams) = jax.lax.scan(step, (bandits.init_bandit(5), jnp.array(0.0)), keys)
    return np.asarray(costs), np.asarray(lams)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("docs/results/lambda_loop.md"))
    args = parser.parse_args()
    rows = []
    for kind, oracle_lambda, rho in VARIANTS:
        runs = [run(kind, oracle_lambda, rho, s) for s in range(args.seeds)]
        tail_cost = np.array([c[-TAIL:].mean() for c, _ in runs])
        cost_sd = np.array([c[-TAIL:].std() for c, _ in runs])
        lam_sd = np.array([lam[-TAIL:].std() for _, lam in runs])
        rows.append(
            (
                kind,
                oracle_lambda,
                f"{rho:g}",
                f"{tail_cost.mean():.2f} ± {tail_cost.std():.2f}",
                f"{np.abs(tail_cost - (1 - MARGIN) * BUDGET).max():.2f}",
                f"{cost_sd.mean():.2f}",
                f"{lam_sd.mean():.2f}",
            )
        )
    header = (
        "bandit",
        "oracle's λ",
        "hint decay ρ",
        "policy cost, last 1,000 rounds (target 3.2)",
        "worst seed's distance from 3.2",
        "cost sd within the tail",
        "sd of the oracle's λ within the tail",
    )
    spiky = []
    for spike, g_h in itertools.product(SPIKES, HINT_VIOLATIONS):
        runs = [run("hedgebox", "mean", 0.95, s, spike, g_h) for s in range(args.seeds)]
        tail_cost = np.array([c[-TAIL:].mean() for c, _ in runs])
        lam_tail = np.stack([lam[-TAIL:] for _, lam in runs])
        spiky.append(
            (
                f"{spike} c w.p. 1/{spike}",
                f"{g_h:g}",
                f"{tail_cost.mean():.2f} ± {tail_cost.std():.2f}",
                f"{np.abs(tail_cost - (1 - MARGIN) * BUDGET).max():.2f}",
                f"{lam_tail.mean():.2f}",
                f"{lam_tail.std(axis=1).mean():.2f}",
                f"{np.quantile(lam_tail, 0.99, axis=1).mean():.2f}",
            )
        )
    spiky_header = (
        "reading",
        "hint's G_h",
        "policy cost, last 1,000 rounds (target 3.2)",
        "worst seed's distance from 3.2",
        "the oracle's λ, mean",
        "its sd within the tail",
        "its 99th percentile",
    )
    intro = [
        "# The λ-player in a closed loop with a jumping cost reading",
        "",
        f"Command: `python benchmarks/lambda_loop.py --seeds {args.seeds} --out {args.out}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores; date: {datetime.date.today()}  ",
        "",
        "The 'policy' is a first-order lag (gain 0.05 per round) of the cost of the λ it is trained on,",
        "c*(λ) = 2 B e^{−λ} with B = 4; the λ-player reads Ĉ = 4 c with probability ¼ and 0 otherwise (mean c), as",
        "BallRun's estimate jumps when the policy sits on either side of its speed limit. Arms linspace(0, 5, 5),",
        "lagrangian feedback with margin δ = 0.2 and violations counted up to G = 20, η = 0.03, box W = 6, optimism",
        f"β = 8; {ROUNDS} rounds, mean ± std over {args.seeds} seeds of the last {TAIL} rounds.",
        "",
    ]
    spiky_intro = [
        "",
        "## A spikier reading, and the hint's violations",
        "",
        "Hedge on the box, the oracle on the mean λ, ρ = 0.95 (the adaptive player's defaults). The reading is",
        "Ĉ = s c with probability 1 / s (mean c); with s = 16 a crossing reads 16 times the policy's mean cost, as",
        "BallRun's crossings read 10–20 budgets. The weights count violations up to G = 20 budget scales in every row;",
        "the optimism's hint counts them up to G_h (`--o3srl.hint-violation`).",
        "",
    ]
    table = show_markdown_table(header, rows)
    spiky_table = show_markdown_table(spiky_header, spiky)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, "\n".join(intro) + table + "\n" + "\n".join(spiky_intro) + spiky_table + "\n")


if __name__ == "__main__":
    main()
