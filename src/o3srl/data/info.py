"""``o3srl data info``: what a dataset holds, on one screen, and the reward–cost scatter of its episodes.

The summary is a plain dict (``summarize``) so that reports and tests use the same numbers the command prints:
episodes, transitions, reward/cost return quantiles, the fraction of episodes within each cost limit, and the
dataset's safe frontier R*_data(κ) (the best episode reward among episodes with cost ≤ κ), a data-only yardstick for
a policy's reward.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from tyro.conf import Positional
from tyro.conf import arg as tyro_arg

from o3srl.data.dataset import Episodes, OfflineDataset, safe_frontier

DEFAULT_COST_LIMITS: tuple[float, ...] = (5.0, 10.0, 20.0, 40.0)
QUANTILES: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)


def _quantiles(values: np.ndarray) -> dict[str, float]:
    qs = np.quantile(values, QUANTILES)
    names = ("min", "q25", "median", "q75", "max")
    return {name: float(q) for name, q in zip(names, qs)} | {"mean": float(values.mean())}


def summarize(dataset: OfflineDataset, cost_limits: Sequence[float] = DEFAULT_COST_LIMITS) -> dict[str, Any]:
    """Counts, return quantiles, and per cost limit κ: the fraction of episodes with cost ≤ κ and R*_data(κ)."""
    ep = dataset.episodes
    terminals = int(dataset["terminals"].sum())
    per_limit = {}
    for kappa in cost_limits:
        frontier = safe_frontier(ep, kappa)
        per_limit[f"{kappa:g}"] = {
            "fraction_within": float(np.mean(ep.cost_return <= kappa + 1e-9)),
            "safe_frontier": None if math.isnan(frontier) else frontier,
        }
    return {
        "source": dataset.source,
        "transitions": len(dataset),
        "episodes": len(ep),
        "obs_dim": dataset.obs_dim,
        "act_dim": dataset.act_dim,
        "episodes_ending_in_terminal": terminals,
        "episode_length": _quantiles(ep.length.astype(np.float64)),
        "reward_return": _quantiles(ep.reward_return),
        "cost_return": _quantiles(ep.cost_return),
        "cost_limits": per_limit,
    }


def scatter_png(episodes: Episodes, title: str, cost_limits: Sequence[float] = DEFAULT_COST_LIMITS) -> bytes:
    """One dot per episode, cost return on x and reward return on y (DSRL's figure), with κ lines and the safe
    frontier R*_data(κ) drawn as a step curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    ax.scatter(episodes.cost_return, episodes.reward_return, s=6, alpha=0.5, lw=0)
    grid = np.linspace(0.0, float(episodes.cost_return.max()), 200)
    frontier = [safe_frontier(episodes, k) for k in grid]
    ax.plot(grid, frontier, color="k", lw=1, label="safe frontier R*_data(κ)")
    for kappa in cost_limits:
        ax.axvline(kappa, color="tab:red", ls=":", lw=0.8)
    ax.set_xlabel("episode cost return")
    ax.set_ylabel("episode reward return")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _print(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"[bold]{summary['source']}[/bold]: {summary['episodes']} episodes, {summary['transitions']} transitions, "
        f"obs {summary['obs_dim']}, act {summary['act_dim']}, "
        f"{summary['episodes_ending_in_terminal']} episodes end in a terminal state"
    )
    q = Table(title="per-episode quantiles")
    for col in ("", "min", "25%", "median", "75%", "max", "mean"):
        q.add_column(col, justify="right")
    for key, name in (("reward_return", "reward return"), ("cost_return", "cost return"), ("episode_length", "length")):
        v = summary[key]
        q.add_row(name, *(f"{v[k]:.1f}" for k in ("min", "q25", "median", "q75", "max", "mean")))
    console.print(q)
    f = Table(title="by cost limit κ")
    for col in ("κ", "episodes with cost ≤ κ", "safe frontier R*_data(κ)"):
        f.add_column(col, justify="right")
    for kappa, v in summary["cost_limits"].items():
        frontier = "none" if v["safe_frontier"] is None else f"{v['safe_frontier']:.1f}"
        f.add_row(kappa, f"{100 * v['fraction_within']:.1f}%", frontier)
    console.print(f)


def cli_info(
    file: Annotated[str, Positional, tyro_arg(metavar="FILE")],
    plot: str | None = None,
    cost_limits: tuple[float, ...] = DEFAULT_COST_LIMITS,
    json_out: bool = False,
) -> int:
    """Summarise a DSRL-format dataset: episodes, transitions, reward/cost return quantiles, the safe frontier.

    Args:
        file: a DSRL-format .hdf5/.h5 or .npz file.
        plot: also write the reward–cost scatter of its episodes to this PNG file.
        cost_limits: the cost limits κ to report the safe frontier R*_data(κ) for.
        json_out: print the summary as JSON instead of tables.
    """
    from o3srl.errors import ConfigError
    from o3srl.io import atomic_write_bytes, ensure_writable_dir

    if plot is not None and Path(plot).suffix.lower() != ".png":
        raise ConfigError(f"--plot {plot}: the scatter plot is written as PNG; give a file name ending in .png")
    from o3srl.validation import NON_NEGATIVE, check_number

    for kappa in cost_limits:
        check_number("--cost-limits (each)", kappa, NON_NEGATIVE)
    if plot is not None:
        ensure_writable_dir(Path(plot).absolute().parent, f"--plot {plot}")
    dataset = OfflineDataset.load(file)
    if len(dataset.episodes) == 1 and len(dataset) > 1:
        import sys

        print(
            f"note: {file}: all {len(dataset)} transitions form one single episode; are its episode boundaries "
            "(terminals | timeouts) missing?",
            file=sys.stderr,
        )
    summary = summarize(dataset, cost_limits)
    if json_out:
        print(json.dumps(summary, indent=2))
    else:
        _print(summary)
    if plot is not None:
        atomic_write_bytes(plot, scatter_png(dataset.episodes, Path(file).name, cost_limits))
        if not json_out:
            print(f"scatter plot: {plot}")
    return 0
