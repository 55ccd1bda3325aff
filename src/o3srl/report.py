"""Reports from a grid's results file: paper-style tables, aggregate statistics and plots, as markdown + PNG.

``o3srl report RESULTS.jsonl --out docs/results/NAME`` writes ``NAME.md`` and its figures under ``NAME/``:

- one table per cost limit in the paper's layout — rows tasks, columns algorithms, each entry
  "normalized reward / normalized cost" as mean ± std over seeds. Safe entries (mean normalized cost ≤ 1, DSRL's
  criterion) carry ✓; the best reward among the *safe* agents of a task is bold; unsafe entries carry ✗, are set in
  italics and are never counted as best (a high reward bought by violating the limit is not a result). A last row
  counts the tasks on which each algorithm is safe;
- aggregate statistics with rliable (optional extra ``stats``): IQM of normalized reward and normalized cost and
  the safe rate, with stratified-bootstrap 95% confidence intervals over runs;
- plots: per task normalized cost vs normalized reward with the κ line (x = 1); training curves from each cell's
  ``metrics.jsonl``; for O3SRL the arm probabilities and λ over training (from ``rounds.npz``).

Every report says which reference scores the normalized rewards use (rows carry ``reward_reference``: DSRL's
constants, the dataset's own min/max, or given on the command line), because numbers against different references
are not comparable. The marking logic is a handful of pure functions, tested on their own.
"""

from __future__ import annotations

import io
import json
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from tyro.conf import Positional
from tyro.conf import arg as tyro_arg

from o3srl.errors import O3SRLError
from o3srl.rundir import RUN_INFO_NAME, TRACE_NAME, read_metrics, read_trace
from o3srl.transforms import is_safe, safe_mask

Mark = Literal["best", "safe", "unsafe", "missing"]
SAFE, UNSAFE = "✓", "✗"
REFERENCE_NAMES = {
    "dsrl": "DSRL's reference scores (MIN_R/MAX_R of dsrl/infos.py)",
    "dataset": "the dataset's own min/max episode reward",
    "given": "reference scores given in the config (reward_min/reward_max)",
}
CURVES = (
    ("feedback/reward_estimate", "critic's reward estimate"),
    ("feedback/cost_estimate", "critic's cost estimate V̂_c(s0)"),
    ("bandit/lambda_mean", "λ (mean over each logged window)"),
    ("eval/normalized_reward", "periodic eval: normalized reward"),
    ("eval/normalized_cost", "periodic eval: normalized cost"),
)


# ---------------------------------------------------------------------------------------------------- pure logic
@dataclass(frozen=True)
class Entry:
    """One table cell: an algorithm on a task at one cost limit, aggregated over seeds."""

    reward_mean: float
    reward_std: float
    cost_mean: float
    cost_std: float
    n: int

    @property
    def safe(self) -> bool:
        return is_safe(self.cost_mean)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and (population, ddof = 0) standard deviation over seeds, as the evaluation's per-episode std."""
    arr = np.asarray(values, np.float64)
    return float(arr.mean()), float(arr.std())


def make_entry(rewards: Sequence[float], costs: Sequence[float]) -> Entry:
    r, rs = mean_std(rewards)
    c, cs = mean_std(costs)
    return Entry(r, rs, c, cs, len(rewards))


def mark_entries(entries: Mapping[str, Entry | None]) -> dict[str, Mark]:
    """Marks for one task row: ``best`` = highest mean reward among safe entries (ties share it), other safe
    entries ``safe``, unsafe ones ``unsafe`` (never best, whatever their reward), absent ones ``missing``."""
    safe_rewards = [e.reward_mean for e in entries.values() if e is not None and e.safe]
    best = max(safe_rewards) if safe_rewards else None
    marks: dict[str, Mark] = {}
    for alg, e in entries.items():
        if e is None:
            marks[alg] = "missing"
        elif not e.safe:
            marks[alg] = "unsafe"
        else:
            marks[alg] = "best" if e.reward_mean == best else "safe"
    return marks


def format_entry(entry: Entry | None, mark: Mark, *, digits: int = 2, expected_n: int | None = None) -> str:
    """Markdown text of one entry: ``✓ **r ± s / c ± s**`` (best), ``✓ r ± s / c ± s``, ``✗ *r ± s / c ± s*``."""
    if entry is None or mark == "missing":
        return "—"
    text = (
        f"{entry.reward_mean:.{digits}f} ± {entry.reward_std:.{digits}f} / "
        f"{entry.cost_mean:.{digits}f} ± {entry.cost_std:.{digits}f}"
    )
    if mark == "best":
        text = f"{SAFE} **{text}**"
    elif mark == "safe":
        text = f"{SAFE} {text}"
    else:
        text = f"{UNSAFE} *{text}*"
    if expected_n is not None and entry.n != expected_n:
        text += f" (n={entry.n})"
    return text


def show_markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]], path: str | Path | None = None) -> str:
    """A markdown table of string cells, printed, and written atomically to ``path`` when one is given."""
    from o3srl.io import atomic_write_text

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    table = "\n".join(lines)
    print(table)
    if path is not None:
        atomic_write_text(path, table + "\n")
    return table


def safe_counts(
    table: Mapping[str, Mapping[str, Entry | None]], algorithms: Iterable[str]
) -> dict[str, tuple[int, int]]:
    """Per algorithm: (tasks where it is safe, tasks where it has an entry)."""
    out: dict[str, tuple[int, int]] = {}
    for alg in algorithms:
        present = [row.get(alg) for row in table.values() if row.get(alg) is not None]
        out[alg] = (sum(e.safe for e in present if e is not None), len(present))
    return out


# ---------------------------------------------------------------------------------------------------- results → tables
@dataclass(frozen=True)
class Results:
    rows: list[dict[str, Any]]
    """The last successful row of every cell."""
    failed: list[dict[str, Any]]
    """Cells with a failed attempt and no success."""
    tasks: list[str]
    algorithms: list[str]
    labels: dict[str, str]
    cost_limits: list[float]


def load_results(path: str | Path) -> Results:
    """Read a results file; keep each cell's last successful row, in the grid's task/algorithm order."""
    from o3srl.results import finished_rows, read_rows

    p = Path(path)
    if not p.is_file():
        raise O3SRLError(f"results file {str(path)!r} does not exist")
    all_rows = read_rows(p)
    done = finished_rows(all_rows)
    rows = list(done.values())
    needed = ("task", "algorithm", "cost_limit", "seed", "metrics")
    for row in rows:
        missing = [k for k in needed if k not in row]
        if missing or "eval/normalized_reward" not in row["metrics"] or "eval/normalized_cost" not in row["metrics"]:
            raise O3SRLError(
                f"{path}: row {row.get('cell_id')!r} lacks {missing or 'eval/normalized_* metrics'}; "
                "is this a file written by 'o3srl bench'?"
            )
    if not rows:
        raise O3SRLError(f"{path} holds no finished cells (rows with status 'ok')")
    failed = {r["cell_id"]: r for r in all_rows if r.get("status") == "failed" and r.get("cell_id") not in done}

    def ordered(key: str, index: int) -> list[str]:
        first: dict[str, tuple[int, int]] = {}
        for i, row in enumerate(rows):
            pos = row.get("order", [i, i])[index] if isinstance(row.get("order"), list) else i
            first.setdefault(row[key], (pos, i))
        return sorted(first, key=lambda k: first[k])

    labels = {r["algorithm"]: r.get("label") or r["algorithm"] for r in rows}
    return Results(
        rows=rows,
        failed=list(failed.values()),
        tasks=ordered("task", 0),
        algorithms=ordered("algorithm", 1),
        labels=labels,
        cost_limits=sorted({float(r["cost_limit"]) for r in rows}),
    )


def build_table(
    rows: Iterable[dict[str, Any]], cost_limit: float, key: str = "eval/normalized_reward"
) -> dict[str, dict[str, Entry]]:
    """task → algorithm → Entry over the seeds at ``cost_limit`` (``key``: the reward-side metric)."""
    groups: dict[tuple[str, str], tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for row in rows:
        if float(row["cost_limit"]) != cost_limit or key not in row["metrics"]:
            continue
        r, c = groups[(row["task"], row["algorithm"])]
        r.append(float(row["metrics"][key]))
        c.append(float(row["metrics"]["eval/normalized_cost"]))
    table: dict[str, dict[str, Entry]] = defaultdict(dict)
    for (task, alg), (r, c) in groups.items():
        table[task][alg] = make_entry(r, c)
    return dict(table)


def render_table(
    table: Mapping[str, Mapping[str, Entry]],
    tasks: Sequence[str],
    algorithms: Sequence[str],
    labels: Mapping[str, str],
    *,
    digits: int = 2,
) -> str:
    """The paper's layout as a markdown table, with a mean row and the count of tasks where each algorithm is safe."""
    present = [t for t in tasks if t in table]
    expected = max((e.n for row in table.values() for e in row.values()), default=None)
    lines = ["| task | " + " | ".join(labels.get(a, a) for a in algorithms) + " |", "|---|" + "---|" * len(algorithms)]
    for task in present:
        entries = {a: table[task].get(a) for a in algorithms}
        marks = mark_entries(entries)
        cells = [format_entry(entries[a], marks[a], digits=digits, expected_n=expected) for a in algorithms]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    means = []
    for alg in algorithms:
        es = [table[t][alg] for t in present if alg in table[t]]
        if es:
            # A mean over fewer tasks than the table has is not comparable with the others: say over how many.
            partial = f" ({len(es)} / {len(present)} tasks)" if len(es) < len(present) else ""
            means.append(
                f"{np.mean([e.reward_mean for e in es]):.{digits}f} / "
                f"{np.mean([e.cost_mean for e in es]):.{digits}f}{partial}"
            )
        else:
            means.append("—")
    lines.append("| *mean over tasks* | " + " | ".join(means) + " |")
    counts = safe_counts({t: table[t] for t in present}, algorithms)
    lines.append(
        "| **safe on (tasks)** | " + " | ".join(f"{s} / {n}" for s, n in (counts[a] for a in algorithms)) + " |"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- statistics
def score_matrices(
    rows: Sequence[dict[str, Any]], cost_limit: float, algorithms: Sequence[str]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[str], int]:
    """rliable's (runs × tasks) matrices of normalized reward and cost over the tasks every algorithm has, using the
    first n seeds of each (n = the smallest seed count), so all algorithms are compared on the same runs."""
    by: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if float(row["cost_limit"]) == cost_limit:
            by[(row["task"], row["algorithm"])].append(row)
    tasks = sorted({t for t, _ in by if all((t, a) in by for a in algorithms)})
    if not tasks:
        return {}, {}, [], 0
    n = min(len(by[(t, a)]) for t in tasks for a in algorithms)
    rewards, costs = {}, {}
    for alg in algorithms:
        rr = np.zeros((n, len(tasks)))
        cc = np.zeros((n, len(tasks)))
        for j, task in enumerate(tasks):
            runs = sorted(by[(task, alg)], key=lambda r: r["seed"])[:n]
            rr[:, j] = [r["metrics"]["eval/normalized_reward"] for r in runs]
            cc[:, j] = [r["metrics"]["eval/normalized_cost"] for r in runs]
        rewards[alg], costs[alg] = rr, cc
    return rewards, costs, tasks, n


def _point_and_interval(point: dict[str, np.ndarray], interval: dict[str, np.ndarray], alg: str) -> str:
    """``point [low, high]`` of one algorithm's estimate."""
    return f"{float(point[alg][0]):.3f} [{float(interval[alg][0, 0]):.3f}, {float(interval[alg][1, 0]):.3f}]"


def aggregate_section(results: Results, *, reps: int = 2000, seed: int = 0) -> str:
    """Markdown for rliable's IQM and safe rate with stratified-bootstrap CIs, or a note that rliable is missing."""
    try:
        from rliable import library, metrics
    except ImportError:
        return (
            "rliable is not installed, so aggregate statistics are skipped "
            "(install them with `pip install 'o3srl[stats]'`)."
        )
    out = [
        f"IQM (interquartile mean over all runs × tasks) and safe rate (fraction of runs with normalized cost ≤ 1), "
        f"with 95% stratified-bootstrap confidence intervals (rliable, {reps} resamples of runs within each task)."
    ]
    for kappa in results.cost_limits:
        rewards, costs, tasks, n = score_matrices(results.rows, kappa, results.algorithms)
        if not tasks:
            out.append(f"\n**κ = {kappa:g}**: no task has every algorithm; skipped.")
            continue
        import warnings

        state = np.random.RandomState(seed)
        safe = {a: safe_mask(costs[a]).astype(np.float64) for a in costs}
        iqm = lambda x: np.array([metrics.aggregate_iqm(x)])  # noqa: E731
        mean = lambda x: np.array([np.mean(x)])  # noqa: E731
        with warnings.catch_warnings():  # arch deprecates random_state, which rliable still passes on
            warnings.simplefilter("ignore", FutureWarning)
            r_pt, r_ci = library.get_interval_estimates(rewards, iqm, reps=reps, random_state=state)
            c_pt, c_ci = library.get_interval_estimates(costs, iqm, reps=reps, random_state=state)
            s_pt, s_ci = library.get_interval_estimates(safe, mean, reps=reps, random_state=state)
        n_tasks = f"{len(tasks)} task" + ("s" if len(tasks) != 1 else "")
        n_seeds = f"{n} seed" + ("s" if n != 1 else "")
        out.append(
            f"\n**κ = {kappa:g}** ({n_tasks} × {n_seeds}: {', '.join(tasks)}; a task enters when every "
            f"algorithm has run on it)\n"
        )
        out.append("| algorithm | IQM normalized reward | IQM normalized cost | safe rate |")
        out.append("|---|---|---|---|")
        for alg in results.algorithms:
            cells = [_point_and_interval(pt, ci, alg) for pt, ci in ((r_pt, r_ci), (c_pt, c_ci), (s_pt, s_ci))]
            out.append(f"| {results.labels[alg]} | " + " | ".join(cells) + " |")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------------- plots
def _figure_bytes(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid_shape(n: int, max_cols: int = 4) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def _figure_legend(fig: Any, axes: Any) -> None:
    """One legend for the figure from every panel's labels (a panel may lack an algorithm that another has)."""
    entries: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    fig.legend(
        list(entries.values()),
        list(entries),
        loc="lower center",
        ncol=min(max(len(entries), 1), 4),
        fontsize=8,
        frameon=False,
    )


def plot_tradeoff(results: Results, cost_limit: float) -> bytes:
    """Per task: normalized cost (x) vs normalized reward (y) of every algorithm, seeds and mean ± std, κ line at 1."""
    plt = _pyplot()
    tasks = [
        t for t in results.tasks if any(r["task"] == t and float(r["cost_limit"]) == cost_limit for r in results.rows)
    ]
    nrows, ncols = _grid_shape(len(tasks))
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(3.6 * ncols, 6.0), 3.2 * nrows + 0.6), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, task in zip(axes.flat, tasks):
        for k, alg in enumerate(results.algorithms):
            pts = [
                (r["metrics"]["eval/normalized_cost"], r["metrics"]["eval/normalized_reward"])
                for r in results.rows
                if r["task"] == task and r["algorithm"] == alg and float(r["cost_limit"]) == cost_limit
            ]
            if not pts:
                continue
            c, rw = np.array(pts).T
            color = colors[k % len(colors)]
            ax.scatter(c, rw, s=12, alpha=0.35, color=color)
            ax.errorbar(
                c.mean(),
                rw.mean(),
                xerr=c.std(),
                yerr=rw.std(),
                fmt="o",
                color=color,
                capsize=3,
                label=results.labels[alg],
            )
        ax.axvline(1.0, color="k", ls="--", lw=1)
        ax.axvspan(1.0, max(ax.get_xlim()[1], 1.05), color="tab:red", alpha=0.07)
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("normalized cost")
        ax.set_ylabel("normalized reward")
    for ax in list(axes.flat)[len(tasks) :]:
        ax.set_visible(False)
    _figure_legend(fig, axes)
    fig.suptitle(f"κ = {cost_limit:g} (dashed line: the limit; right of it: unsafe)", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    return _figure_bytes(fig)


def plot_curves(results: Results, cost_limit: float) -> bytes | None:
    """Training curves per task (rows) and metric (columns): each seed thin, the mean over seeds thick."""
    curves: dict[tuple[str, str], list[list[dict[str, Any]]]] = defaultdict(list)
    for row in results.rows:
        if float(row["cost_limit"]) == cost_limit and row.get("run_dir"):
            data = read_metrics(Path(row["run_dir"]))
            if data:
                curves[(row["task"], row["algorithm"])].append(data)
    if not curves:
        return None
    keys = [(k, name) for k, name in CURVES if any(k in r for runs in curves.values() for run in runs for r in run)]
    tasks = [t for t in results.tasks if any((t, a) in curves for a in results.algorithms)]
    if not keys:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(len(tasks), len(keys), figsize=(3.6 * len(keys), 2.6 * len(tasks)), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, task in enumerate(tasks):
        for j, (key, name) in enumerate(keys):
            ax = axes[i, j]
            for k, alg in enumerate(results.algorithms):
                series = []
                for run in curves.get((task, alg), []):
                    pts = [(r["step"], r[key]) for r in run if r.get(key) is not None]
                    if pts:
                        series.append(np.array(pts, np.float64))
                        ax.plot(series[-1][:, 0], series[-1][:, 1], color=colors[k % len(colors)], lw=0.6, alpha=0.35)
                if series:
                    n = min(len(s) for s in series)
                    mean = np.mean([s[:n, 1] for s in series], axis=0)
                    ax.plot(series[0][:n, 0], mean, color=colors[k % len(colors)], lw=1.6, label=results.labels[alg])
            if key == "feedback/cost_estimate":
                budgets = [
                    r["feedback/budget"]
                    for runs in curves.values()
                    for run in runs
                    for r in run[:1]
                    if r.get("feedback/budget") is not None
                ]
                if budgets:
                    ax.axhline(float(np.median(budgets)), color="k", ls="--", lw=1)
            if key == "eval/normalized_cost":
                ax.axhline(1.0, color="k", ls="--", lw=1)
            ax.set_title(f"{task}: {name}" if j == 0 else name, fontsize=8)
            ax.tick_params(labelsize=7)
            if i == len(tasks) - 1:
                ax.set_xlabel("gradient step", fontsize=8)
    _figure_legend(fig, axes)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return _figure_bytes(fig)


def bandit_plots(results: Results, cost_limit: float, out_dir: Path) -> list[tuple[str, Path]]:
    """For O3SRL cells (practical variant), the lowest seed's arm probabilities and λ over training per task."""
    from o3srl.plots import plot_bandit_history

    made: list[tuple[str, Path]] = []
    chosen: dict[tuple[str, str], dict[str, Any]] = {}
    for row in sorted(results.rows, key=lambda r: r["seed"]):
        cfg = row.get("config") or {}
        if float(row["cost_limit"]) != cost_limit or cfg.get("algo") != "o3srl" or cfg.get("variant") == "theory":
            continue
        chosen.setdefault((row["task"], row["algorithm"]), row)
    for (task, alg), row in sorted(
        chosen.items(), key=lambda kv: (results.tasks.index(kv[0][0]), results.algorithms.index(kv[0][1]))
    ):
        run_dir = Path(row.get("run_dir", ""))
        info_path = run_dir / RUN_INFO_NAME
        if not info_path.exists():
            continue
        arms = json.loads(info_path.read_text()).get("arms", [])
        out = out_dir / f"bandit_{task}_{alg}_k{cost_limit:g}_s{row['seed']}.png"
        if plot_bandit_history(run_dir / TRACE_NAME, out, arms) is not None:
            made.append((f"{task}, {results.labels[alg]}, seed {row['seed']}", out))
    return made


# ---------------------------------------------------------------------------------------------------- κ-response
def tail_lambda(run_dir: str | Path, fraction: float = 0.1) -> float | None:
    """The mean pulled λ over the last ``fraction`` of a run's rounds (from its ``rounds.npz``); None if absent."""
    trace = read_trace(Path(run_dir) / TRACE_NAME)
    if trace is None or "bandit/lambda" not in trace:
        return None
    lam = np.asarray(trace["bandit/lambda"], np.float64)
    if lam.size == 0:
        return None
    return float(lam[-max(1, int(round(lam.size * fraction))) :].mean())


def _response_cells(results: Results, task: str, alg: str) -> dict[float, list[dict[str, Any]]]:
    out: dict[float, list[dict[str, Any]]] = {}
    for r in results.rows:
        if r["task"] == task and r["algorithm"] == alg:
            out.setdefault(float(r["cost_limit"]), []).append(r)
    return out


def kappa_response_section(results: Results, fig_dir: Path, rel: str) -> tuple[list[str], dict[Path, bytes]]:
    """With two or more cost limits: per task, the episode reward and cost of every algorithm against κ (raw
    returns, mean over seeds), the mean λ of the last 10 % of rounds, and the dataset's safe frontier R*_data(κ);
    one figure per task (reward and cost against κ, the frontier and the limit drawn)."""
    if len(results.cost_limits) < 2:
        return [], {}
    plt = _pyplot()
    md = [
        "## Response to the cost limit",
        "",
        "Per task and κ: episode reward / episode cost (raw returns, mean over seeds) and, for O3SRL, λ̄ = the mean "
        "pulled λ over the last 10 % of rounds (mean over seeds; from the run directories). ✗ marks a mean "
        "normalized cost above 1. R*_data(κ): the dataset's best episode reward among episodes with cost ≤ κ.",
        "",
    ]
    figures: dict[Path, bytes] = {}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for task in results.tasks:
        kappas = [
            k
            for k in results.cost_limits
            if any(r["task"] == task and float(r["cost_limit"]) == k for r in results.rows)
        ]
        if len(kappas) < 2:
            continue
        frontier = {
            float(r["cost_limit"]): float(r["safe_frontier"])
            for r in results.rows
            if r["task"] == task and r.get("safe_frontier") is not None
        }
        md += [
            f"### {task}",
            "",
            "| algorithm | " + " | ".join(f"κ = {k:g}" for k in kappas) + " |",
            "|---|" + "---|" * len(kappas),
        ]
        md.append("| R*_data(κ) | " + " | ".join(f"{frontier[k]:.1f}" if k in frontier else "—" for k in kappas) + " |")
        fig, (ax_r, ax_c) = plt.subplots(1, 2, figsize=(9.0, 3.4))
        for i, alg in enumerate(results.algorithms):
            cells = _response_cells(results, task, alg)
            if not cells:
                continue
            parts, xs, rew, rew_sd, cost, cost_sd = [], [], [], [], [], []
            for k in kappas:
                rs = cells.get(k, [])
                if not rs:
                    parts.append("—")
                    continue
                r_mean, r_sd = mean_std([r["metrics"]["eval/reward"] for r in rs])
                c_mean, c_sd = mean_std([r["metrics"]["eval/cost"] for r in rs])
                n_cost = float(np.mean([r["metrics"]["eval/normalized_cost"] for r in rs]))
                lams = [x for x in (tail_lambda(r.get("run_dir", "")) for r in rs) if x is not None]
                lam = f" (λ̄ {np.mean(lams):.3g})" if lams and (rs[0].get("config") or {}).get("algo") == "o3srl" else ""
                mark = "" if is_safe(n_cost) else f"{UNSAFE} "
                parts.append(f"{mark}{r_mean:.1f} / {c_mean:.1f}{lam}")
                xs.append(k)
                rew.append(r_mean)
                rew_sd.append(r_sd)
                cost.append(c_mean)
                cost_sd.append(c_sd)
            md.append(f"| {results.labels[alg]} | " + " | ".join(parts) + " |")
            color = colors[i % len(colors)]
            ax_r.errorbar(xs, rew, yerr=rew_sd, marker="o", capsize=3, color=color, label=results.labels[alg])
            ax_c.errorbar(xs, cost, yerr=cost_sd, marker="o", capsize=3, color=color, label=results.labels[alg])
        if frontier:
            ks = sorted(k for k in frontier if k in kappas)
            ax_r.plot(ks, [frontier[k] for k in ks], "k--", lw=1, label="R*_data(κ)")
        ax_c.plot(kappas, kappas, "k:", lw=1, label="κ (the limit)")
        ax_r.set_xlabel("κ")
        ax_r.set_ylabel("episode reward")
        ax_c.set_xlabel("κ")
        ax_c.set_ylabel("episode cost")
        ax_r.set_title(task, fontsize=9)
        ax_c.legend(fontsize=7)
        ax_r.legend(fontsize=7)
        fig.tight_layout()
        path = fig_dir / f"kappa_response_{task}.png"
        figures[path] = _figure_bytes(fig)
        md += ["", f"![reward and cost against κ, {task}]({rel}/{path.name})", ""]
    return md, figures


# ---------------------------------------------------------------------------------------------------- the report
def _reference_section(results: Results) -> str:
    by_task: dict[str, set[tuple[str, tuple[float, float]]]] = defaultdict(set)
    frontier: dict[tuple[str, float], float] = {}
    sha: dict[str, set[str]] = defaultdict(set)
    for row in results.rows:
        rng = tuple(float(x) for x in row.get("reward_range", [math.nan, math.nan]))
        by_task[row["task"]].add((row.get("reward_reference", "unknown"), rng))  # type: ignore[arg-type]
        if row.get("safe_frontier") is not None:
            frontier[(row["task"], float(row["cost_limit"]))] = float(row["safe_frontier"])
        if row.get("dataset_sha256"):
            sha[row["task"]].add(row["dataset_sha256"][:12])
    kinds = sorted({ref for refs in by_task.values() for ref, _ in refs})
    lines = []
    if len(kinds) == 1:
        lines.append(f"Normalized rewards use **{REFERENCE_NAMES.get(kinds[0], kinds[0])}** for every task.")
    else:
        lines.append(
            "Normalized rewards use **different references on different tasks** (see the table below); "
            "numbers against different references are not comparable."
        )
    lines.append(
        "Normalized cost = (C + ε) / (κ + ε), ε = 1 if κ = 0 else 0 (DSRL); safe ⇔ normalized cost ≤ 1. "
        "Both are computed from the mean episode return over the evaluation episodes, as OSRL does.\n"
    )
    header = (
        "| task | reference | reward range [min, max] | dataset sha256 | "
        + " | ".join(f"R*_data(κ={k:g})" for k in results.cost_limits)
        + " |"
    )
    lines += [header, "|---|---|---|---|" + "---|" * len(results.cost_limits)]
    for task in results.tasks:
        refs = sorted(by_task[task])
        ref_text = "; ".join(REFERENCE_NAMES.get(r, r).split(" (")[0] for r, _ in refs)
        rng_text = "; ".join(f"[{lo:g}, {hi:g}]" for _, (lo, hi) in refs)
        fr = " | ".join(f"{frontier[(task, k)]:.1f}" if (task, k) in frontier else "—" for k in results.cost_limits)
        lines.append(f"| {task} | {ref_text} | {rng_text} | {', '.join(sorted(sha[task])) or '—'} | {fr} |")
    lines.append(
        "\nR*_data(κ): the dataset's best episode reward among episodes with cost ≤ κ (a yardstick that does "
        "not depend on reference scores)."
    )
    return "\n".join(lines)


def _frontier_table(results: Results, kappa: float) -> str | None:
    table = build_table(results.rows, kappa, key="eval/frontier_fraction")
    if not table:
        return None
    lines = [
        "| task | " + " | ".join(results.labels[a] for a in results.algorithms) + " |",
        "|---|" + "---|" * len(results.algorithms),
    ]
    for task in results.tasks:
        if task not in table:
            continue
        cells = []
        for alg in results.algorithms:
            e = table[task].get(alg)
            cells.append(
                "—" if e is None else f"{'' if e.safe else UNSAFE + ' '}{e.reward_mean:.2f} ± {e.reward_std:.2f}"
            )
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(
    results_path: str | Path,
    out: str | Path | None = None,
    *,
    title: str | None = None,
    reps: int = 2000,
    digits: int = 2,
) -> Path:
    """Write ``<out>.md`` and its figures under ``<out>/``; returns the markdown path."""
    from o3srl.io import atomic_write_bytes, atomic_write_text

    if reps < 1:
        raise O3SRLError(f"reps must be ≥ 1, got {reps}")
    results = load_results(results_path)  # validates everything before anything is written
    prefix = Path(out) if out is not None else Path(results_path).with_suffix("")
    prefix = prefix.with_suffix("") if prefix.suffix == ".md" else prefix
    fig_dir = prefix.parent / prefix.name
    rel = prefix.name
    grids = sorted({r.get("grid", "?") for r in results.rows})
    versions = sorted({r.get("o3srl_version", "?") for r in results.rows})
    train_h = sum(float(r.get("train_seconds") or 0) for r in results.rows) / 3600
    eval_h = sum(float(r.get("eval_seconds") or 0) for r in results.rows) / 3600
    hosts = sorted({r.get("host", "?") for r in results.rows})
    episodes = sorted({int(r["metrics"].get("eval/episodes", 0)) for r in results.rows})
    steps = sorted({int(r.get("steps") or (r.get("config") or {}).get("steps", 0)) for r in results.rows})
    seeds = sorted({int(r["seed"]) for r in results.rows})

    md: list[str] = [f"# {title or 'Results: ' + ', '.join(grids)}", ""]
    md.append(
        f"Source: `{Path(results_path).as_posix()}` — {len(results.rows)} finished cells"
        + (f", {len(results.failed)} failed" if results.failed else "")
        + f"; grid(s) {', '.join(grids)}; o3srl {', '.join(versions)}; generated {time.strftime('%Y-%m-%d')} by "
        f"`o3srl report`."
    )
    md.append(
        f"Tasks: {len(results.tasks)}; algorithms: {', '.join(results.labels[a] for a in results.algorithms)}; "
        f"cost limits κ: {', '.join(f'{k:g}' for k in results.cost_limits)}; seeds: "
        f"{', '.join(map(str, seeds))}; evaluation episodes per cell: {', '.join(map(str, episodes))}; "
        f"gradient steps: {', '.join(map(str, steps))}."
    )
    md.append(
        f"Compute: {train_h:.2f} h training + {eval_h:.2f} h evaluation (summed over cells) on {', '.join(hosts)}.\n"
    )
    md += ["## Reference scores", "", _reference_section(results), ""]

    md += [
        "## Tables",
        "",
        f"Each entry: normalized reward / normalized cost, mean ± std over seeds. {SAFE} safe (mean normalized cost "
        f"≤ 1); **bold**: the best reward among the safe agents of that task; {UNSAFE} *italic*: unsafe, never "
        "counted as best. The last row counts the tasks on which each algorithm is safe.",
        "",
    ]
    figures: dict[Path, bytes] = {}
    bandit_lines: list[str] = []
    for kappa in results.cost_limits:
        table = build_table(results.rows, kappa)
        md += [
            f"### κ = {kappa:g}",
            "",
            render_table(table, results.tasks, results.algorithms, results.labels, digits=digits),
            "",
        ]
        frontier = _frontier_table(results, kappa)
        if frontier:
            md += [
                f"Reward as a fraction of the dataset's safe frontier R*_data(κ = {kappa:g}) (mean ± std over "
                "seeds; ✗: unsafe):",
                "",
                frontier,
                "",
            ]
        trade = fig_dir / f"tradeoff_k{kappa:g}.png"
        figures[trade] = plot_tradeoff(results, kappa)
        md += [f"![normalized cost vs reward, κ = {kappa:g}]({rel}/{trade.name})", ""]
    response_md, response_figs = kappa_response_section(results, fig_dir, rel)
    md += response_md
    figures.update(response_figs)
    md += ["## Aggregate statistics", "", aggregate_section(results, reps=reps), ""]

    md += ["## Training curves", ""]
    any_curves = False
    for kappa in results.cost_limits:
        png = plot_curves(results, kappa)
        if png is not None:
            any_curves = True
            path = fig_dir / f"curves_k{kappa:g}.png"
            figures[path] = png
            md += [
                f"κ = {kappa:g}: each seed thin, the mean over seeds thick.",
                "",
                f"![training curves, κ = {kappa:g}]({rel}/{path.name})",
                "",
            ]
    if not any_curves:
        md += ["The cells' run directories (metrics.jsonl) were not found here, so there are no training curves.", ""]

    for path, data in figures.items():
        atomic_write_bytes(path, data)
    for kappa in results.cost_limits:
        for caption, path in bandit_plots(results, kappa, fig_dir):
            bandit_lines += [f"**κ = {kappa:g}, {caption}**", "", f"![bandit]({rel}/{path.name})", ""]
    md += ["## O3SRL: arm probabilities and λ over training", ""]
    md += bandit_lines or ["No O3SRL run directories (rounds.npz) were found here.", ""]
    if results.failed:
        md += ["## Failed cells", "", "| cell | error |", "|---|---|"]
        md += [
            f"| {r['cell_id']} | {str(r.get('error', '')).splitlines()[0][:200] if r.get('error') else ''} |"
            for r in results.failed
        ]
        md.append("")
    md_path = prefix.parent / (prefix.name + ".md")
    atomic_write_text(md_path, "\n".join(md).rstrip() + "\n")
    return md_path


def cli_report(
    results: Positional[Annotated[str, tyro_arg(metavar="RESULTS.jsonl")]],
    out: str | None = None,
    title: str | None = None,
    reps: int = 2000,
    digits: int = 2,
) -> int:
    """Write a markdown report (tables per cost limit, aggregate statistics, plots) from a results file.

    Args:
        results: a results JSONL file written by 'o3srl bench'.
        out: output prefix: writes OUT.md and figures under OUT/ (default: the results path without .jsonl).
        title: the report's title (default: from the grid names).
        reps: bootstrap resamples for the confidence intervals.
        digits: decimals in the tables.
    """
    path = write_report(results, out, title=title, reps=reps, digits=digits)
    print(f"wrote {path} (figures in {path.with_suffix('')}/)")
    return 0
