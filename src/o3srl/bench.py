"""Running an experiment grid (:mod:`o3srl.grid`): one training run + final evaluation per cell, by local worker
processes or Ray tasks, each finished (or failed) attempt one row of the results file (:mod:`o3srl.results`).

Why the design is as it is:

- The whole grid is validated (keys, types, tasks, every cell's resolved config) before anything runs, so a typo
  fails in a second with one clear :class:`ConfigError`, not after hours (:func:`o3srl.grid.load_grid`).
- A cell has a stable id (``task__algorithm__k<κ>__s<seed>``) and a deterministic run directory under
  ``runs_dir``; a finished cell is a row with ``"status": "ok"`` in the results file. Re-running the grid skips
  finished cells and continues a killed cell from its last checkpoint (``o3srl.train.run(resume_dir=...)``), so a
  grid can be spread over several sittings. A finished cell whose config differs from the grid's is an error,
  never silently mixed.
- Only the driver writes the results file: one JSON line per cell, written with a single ``write`` then flushed
  and fsynced, under an exclusive lock; a torn last line left by a crash is cut off before appending. Earlier rows
  are never rewritten.
- Training is timed apart from evaluation: the run trains with ``eval_episodes = 0`` and the cell then evaluates
  the saved policy exactly as ``o3srl train`` would (same seed, copies, reference scores) and writes ``eval.json``.
  The two can also run as separate stages (``--stage train`` / ``--stage evaluate``): cells trained on a machine
  without the simulators (an accelerator machine) are evaluated elsewhere from their run directories alone.
- Packed training: cells on one dataset whose configs differ only in seed, cost limit or fixed λ
  (``o3srl.train.pack_key``) are trained together as one vmapped program (``o3srl.train.run_pack``), up to
  ``pack`` cells at a time (grid key or ``--pack``); each keeps its own run directory, checkpoints and row. The
  default is 1 on a CPU (one single-threaded process per core is as fast, and a crash loses one cell) and
  :data:`ACCELERATOR_PACK` where JAX will find an accelerator. A failed pack is retried cell by cell.
- Local executor: one single-threaded JAX process per core (threads collapse when processes compete for cores);
  each cell gets a fresh process, so nothing leaks from one run to the next and a crash loses one cell.
- Ray executor: the same cells as Ray tasks (1 CPU each, same single-thread environment), retried by Ray, rows
  streamed back to the driver's results file as they finish.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import sys
import time
import traceback
import typing
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tyro.conf import Positional
from tyro.conf import arg as tyro_arg

from o3srl.errors import ConfigError, O3SRLError
from o3srl.grid import Cell, Grid, load_grid, select_algorithms, select_tasks
from o3srl.results import SCHEMA_VERSION, ResultsWriter, finished_rows, read_rows, write_csv
from o3srl.rundir import CONFIG_NAME

if typing.TYPE_CHECKING:  # pragma: no cover
    pass

# XLA on CPU: one thread per process. Set before JAX is imported in a worker.
SINGLE_THREAD_ENV: dict[str, str] = {
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
# A worker on an accelerator takes its memory as it needs it, so that several workers can share one device.
WORKER_ENV: dict[str, str] = {**SINGLE_THREAD_ENV, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
ACCELERATOR_PACK = 32
"""Default pack size where JAX will find an accelerator (many runs in one program keep it busy)."""
ACCELERATOR_WORKERS = 4
"""Default worker processes sharing one accelerator (packs of different tasks side by side)."""
Stage = Literal["all", "train", "evaluate"]


# ---------------------------------------------------------------------------------------------------- one cell
def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _base_row(cell: Cell, grid_name: str) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "cell_id": cell.cell_id,
        "grid": grid_name,
        "task": cell.task,
        "algorithm": cell.algorithm,
        "label": cell.label,
        "cost_limit": cell.cost_limit,
        "seed": cell.seed,
        "order": list(cell.order),
    }


def is_trained(cell: Cell) -> bool:
    """Whether the cell's run directory holds its finished training (a final policy, and a checkpoint at its last
    step or, where the checkpoint was left behind, the summary written with that policy): what ``--stage evaluate``
    needs."""
    from o3srl.checkpoint import CheckpointError
    from o3srl.rundir import has_policy, trained_step

    if not has_policy(cell.run_dir):
        return False
    try:
        step = trained_step(cell.run_dir)
    except CheckpointError:
        return False
    return step is not None and step >= cell.config.steps


def _checkpoint_step(cell: Cell) -> int:
    """The step of the cell's checkpoint: 0 without one, -1 when it cannot be read."""
    from o3srl.checkpoint import CheckpointError
    from o3srl.rundir import checkpoint_step

    try:
        step = checkpoint_step(cell.run_dir)
    except CheckpointError:
        return -1  # unreadable: trained alone, where the training loop reports it
    return 0 if step is None else step


def make_packs(cells: Sequence[Cell], pack: int) -> list[list[Cell]]:
    """The cells in groups trained as one program: same :func:`o3srl.train.pack_key` and the same checkpoint step
    (a pack resumes together), at most ``pack`` each, in grid order."""
    from o3srl.train import pack_key

    groups: dict[tuple[str, int], list[Cell]] = {}
    for cell in cells:
        step = _checkpoint_step(cell) if pack > 1 else 0
        key = (pack_key(cell.train_config()), step) if pack > 1 and step >= 0 else (cell.cell_id, 0)
        groups.setdefault(key, []).append(cell)
    return [group[i : i + pack] for group in groups.values() for i in range(0, len(group), pack)]


def execute_pack(cells: Sequence[Cell], grid_name: str, stage: Stage = "all") -> list[dict[str, Any]]:
    """Train (or resume) the cells as one program and evaluate each; returns their rows (stage ``train``: rows with
    status ``trained``, which the driver does not record). A failed training raises; a failed evaluation is that
    cell's ``failed`` row."""
    from o3srl.logger import logged_seconds
    from o3srl.rundir import METRICS_NAME, clear_logs, has_checkpoint
    from o3srl.train import run_pack

    started, t0 = _now(), time.time()
    resumed_from: list[int] = []
    if stage != "evaluate":
        # A trained cell copied here without its checkpoint (see :func:`is_trained`) is only evaluated.
        done = [is_trained(c) and not has_checkpoint(c.run_dir) for c in cells]
        to_train = [c for c, d in zip(cells, done) if not d]
        resume_dirs: list[str | None] = []
        for cell, trained in zip(cells, done):
            if trained:
                resumed_from.append(cell.config.steps)
            elif has_checkpoint(cell.run_dir):
                resumed_from.append(_checkpoint_step(cell))
                resume_dirs.append(str(cell.run_dir))
            else:
                # Killed before its first checkpoint: start over, without the dead attempt's log rows.
                clear_logs(cell.run_dir)
                resumed_from.append(0)
                resume_dirs.append(None)
        if to_train:
            run_pack([c.train_config() for c in to_train], resume_dirs=resume_dirs)
    else:
        resumed_from = [c.config.steps for c in cells]
    sitting_seconds = time.time() - t0 if stage != "evaluate" else 0.0
    rows = []
    for cell, resumed in zip(cells, resumed_from):
        # The whole cell's training time, earlier sittings of a resumed cell included (this sitting alone would
        # undercount it); the sitting's wall time, with process start and compilation, is kept beside it. In a
        # pack each cell counts the pack's time: its steps took that long.
        logged = logged_seconds(cell.run_dir / METRICS_NAME)
        timing = {
            "train_seconds": round(logged if logged is not None else sitting_seconds, 3),
            "sitting_seconds": round(sitting_seconds, 3),
            "resumed_from_step": resumed,
            "pack": len(cells) if stage != "evaluate" else None,  # trained in a pack of this many cells
            "started_at": started,
        }
        if stage == "train":
            rows.append({**_base_row(cell, grid_name), "status": "trained", **timing, "run_dir": str(cell.run_dir)})
            continue
        try:
            rows.append(_evaluate_cell(cell, grid_name, timing))
        except Exception as exc:  # noqa: BLE001 — one cell's failed evaluation leaves the others' rows
            rows.append(failed_row(cell, grid_name, exc, tb=traceback.format_exc()))
    return rows


def execute_cell(cell: Cell, grid_name: str, stage: Stage = "all") -> dict[str, Any]:
    """Train (or resume) one cell, evaluate its final policy, and return its results row. Raises on failure."""
    (row,) = execute_pack([cell], grid_name, stage)
    if row["status"] == "failed":
        raise O3SRLError(row["error"])
    return row


def _evaluate_cell(cell: Cell, grid_name: str, timing: dict[str, Any]) -> dict[str, Any]:
    """Evaluate a trained cell's saved policy as ``o3srl train`` would, write its ``eval.json``; its results row."""
    import numpy as np

    from o3srl import __version__
    from o3srl.config import config_json_dict
    from o3srl.rundir import evaluate_run, write_eval

    run_dir = cell.run_dir
    cfg = cell.config
    t1 = time.time()
    # The grid names the environment (an entry point included), as the training did: it is the run's own.
    result, summary = evaluate_run(
        run_dir,
        episodes=cfg.eval_episodes,
        seed=cfg.eval_seed,
        envs=cfg.eval_envs,
        env_id=cfg.env_id or cfg.task,
        step=cfg.steps,
    )
    eval_seconds = time.time() - t1
    metrics = result.metrics()
    write_eval(run_dir, summary)
    frontier = summary.get("safe_frontier")
    return {
        **_base_row(cell, grid_name),
        "status": "ok",
        "metrics": metrics,
        "episodes": {
            "reward": np.asarray(result.episode_rewards).tolist(),
            "cost": np.asarray(result.episode_costs).tolist(),
            "length": np.asarray(result.episode_lengths).tolist(),
        },
        "reward_reference": summary["reward_reference"],
        "reward_range": summary["reward_range"],
        "safe_frontier": frontier if frontier is not None and math.isfinite(frontier) else None,
        "dataset": summary["dataset"],
        "dataset_sha256": summary["dataset_sha256"],
        "env_id": summary["env_id"],
        "o3srl_version": __version__,
        "train_seconds": timing["train_seconds"],
        "sitting_seconds": timing["sitting_seconds"],
        "eval_seconds": round(eval_seconds, 3),
        "resumed_from_step": timing["resumed_from_step"],
        "pack": timing["pack"],
        "steps": cfg.steps,
        "run_dir": str(run_dir),
        "config": config_json_dict(cfg),
        "host": socket.gethostname(),
        "started_at": timing["started_at"],
        "finished_at": _now(),
    }


def failed_row(
    cell: Cell,
    grid_name: str,
    error: BaseException | str,
    *,
    attempt: int | None = None,
    seconds: float | None = None,
    tb: str | None = None,
) -> dict[str, Any]:
    """A row recording a failed attempt; it never counts as finished."""
    from o3srl import __version__
    from o3srl.config import config_json_dict

    message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return {
        **_base_row(cell, grid_name),
        "status": "failed",
        "error": message[:2000],
        "traceback": (tb or "")[-4000:],
        "attempt": attempt,
        "seconds": seconds,
        "run_dir": str(cell.run_dir),
        "config": config_json_dict(cell.config),
        "o3srl_version": __version__,
        "host": socket.gethostname(),
        "finished_at": _now(),
    }


def _single_thread_init() -> None:
    """Process-pool initialiser: pin XLA (and BLAS) to one thread before JAX is imported in this process."""
    os.environ.update(WORKER_ENV)


def _local_task(cells: list[Cell], grid_name: str, attempt: int, stage: Stage = "all") -> list[dict[str, Any]]:
    """A pack of cells in a worker process: failures come back as rows, so the driver records them and carries on."""
    t0 = time.time()
    try:
        rows = execute_pack(cells, grid_name, stage)
    except Exception as exc:  # noqa: BLE001 — any failure of a cell is recorded, the grid goes on
        tb = traceback.format_exc()
        return [
            failed_row(c, grid_name, exc, attempt=attempt, seconds=round(time.time() - t0, 3), tb=tb) for c in cells
        ]
    for row in rows:
        if row["status"] == "failed":
            row["attempt"] = attempt
    return rows


def _ray_task(cell: Cell, grid_name: str, stage: Stage = "all") -> dict[str, Any]:
    """A cell as a Ray task. It raises on failure so that Ray retries it."""
    if "jax" not in sys.modules:
        os.environ.update(SINGLE_THREAD_ENV)
    return execute_cell(cell, grid_name, stage)


# ---------------------------------------------------------------------------------------------------- executors
@dataclass
class BenchSummary:
    total: int
    skipped: int
    finished: int = 0
    failed: int = 0
    adopted: int = 0
    trained: int = 0
    untrained: int = 0
    """Stage evaluate: cells left alone because their training is not finished."""
    seconds: float = 0.0
    failed_cells: list[str] = dataclasses.field(default_factory=list)


OnRow = Callable[[dict[str, Any]], bool]
"""Called by an executor with each row as it arrives; returns whether the cell should be tried again."""


def _run_local(
    cells: list[Cell],
    grid_name: str,
    workers: int,
    max_retries: int,
    on_row: OnRow,
    stage: Stage = "all",
    pack: int = 1,
) -> None:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    # A pack that failed is tried again cell by cell, so that one bad cell cannot hold the others back.
    packs = make_packs(cells, pack) if stage != "evaluate" else [[c] for c in cells]
    queue: deque[tuple[list[Cell], int]] = deque((p, 1) for p in packs)
    if workers == 0:  # in this process, one after another (debugging; no thread pinning)
        while queue:
            cells, attempt = queue.popleft()
            for cell, row in zip(cells, _local_task(cells, grid_name, attempt, stage)):
                if on_row(row) and attempt <= max_retries:
                    queue.append(([cell], attempt + 1))
        return
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: JAX is imported after the flags are set
    while queue:
        pool = ProcessPoolExecutor(
            max_workers=min(workers, len(queue)), mp_context=ctx, initializer=_single_thread_init, max_tasks_per_child=1
        )
        futures: dict[Future[list[dict[str, Any]]], tuple[list[Cell], int]] = {}
        broken = False
        try:
            while queue or futures:
                while queue and not broken and len(futures) < workers:
                    cells, attempt = queue.popleft()
                    futures[pool.submit(_local_task, cells, grid_name, attempt, stage)] = (cells, attempt)
                if not futures:
                    break
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                for fut in done:
                    cells, attempt = futures.pop(fut)
                    try:
                        rows = fut.result()
                    except BrokenProcessPool as exc:  # the worker died (killed, out of memory): a failed attempt
                        broken = True
                        rows = [
                            failed_row(c, grid_name, f"worker process died ({exc})", attempt=attempt) for c in cells
                        ]
                    except Exception as exc:  # noqa: BLE001
                        rows = [
                            failed_row(c, grid_name, exc, attempt=attempt, tb=traceback.format_exc()) for c in cells
                        ]
                    for cell, row in zip(cells, rows):
                        if on_row(row) and attempt <= max_retries:
                            queue.append(([cell], attempt + 1))
                if broken and not futures:
                    break
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _run_ray(
    cells: list[Cell], grid_name: str, address: str | None, max_retries: int, on_row: OnRow, stage: Stage = "all"
) -> None:
    try:
        import ray
    except ImportError:
        raise O3SRLError("the Ray executor needs Ray: pip install 'o3srl[ray]'") from None
    started = False
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except ConnectionError as exc:
            raise O3SRLError(f"cannot connect to the Ray cluster at {address!r}: {exc}") from None
        started = True
    try:
        task = ray.remote(_ray_task).options(
            num_cpus=1, max_retries=max_retries, retry_exceptions=True, runtime_env={"env_vars": SINGLE_THREAD_ENV}
        )
        pending = {task.remote(cell, grid_name, stage): cell for cell in cells}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                cell = pending.pop(ref)
                try:
                    row = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 — Ray already retried it max_retries times
                    cause = getattr(exc, "cause", None) or exc
                    row = failed_row(
                        cell,
                        grid_name,
                        cause if isinstance(cause, BaseException) else exc,
                        attempt=max_retries + 1,
                        tb=str(exc),
                    )
                on_row(row)
    finally:
        if started:
            ray.shutdown()


def accelerator_present() -> bool:
    """Whether JAX will find a GPU here, judged without starting JAX (which would take the device in the driver):
    a CUDA or ROCm plugin is installed and its device files exist, and ``JAX_PLATFORMS`` does not ask for the CPU."""
    import importlib.util

    if os.environ.get("JAX_PLATFORMS", "").strip().lower() == "cpu":
        return False
    cuda = any(importlib.util.find_spec(m) is not None for m in ("jax_cuda12_plugin", "jax_cuda13_plugin"))
    rocm = any(importlib.util.find_spec(m) is not None for m in ("jax_rocm60_plugin", "jax_rocm7_plugin"))
    return (cuda and Path("/dev/nvidiactl").exists()) or (rocm and Path("/dev/kfd").exists())


def default_pack_size() -> int:
    """Cells per program where the grid and the command line leave it open: 1 on a CPU (one single-threaded process
    per core trains as fast, and a crash loses one cell), :data:`ACCELERATOR_PACK` on an accelerator."""
    return ACCELERATOR_PACK if accelerator_present() else 1


def cell_states(grid: Grid, rows: list[dict[str, Any]]) -> dict[str, str]:
    """``done`` / ``trained`` (not evaluated) / ``partial`` / ``failed before`` / ``todo`` for every cell (for
    ``--dry-run``)."""
    from o3srl.rundir import has_checkpoint

    done = finished_rows(rows)
    failed = {r.get("cell_id") for r in rows if r.get("status") == "failed"}
    out: dict[str, str] = {}
    for cell in grid.cells:
        if cell.cell_id in done:
            out[cell.cell_id] = "done"
        elif is_trained(cell):
            out[cell.cell_id] = "trained"
        elif has_checkpoint(cell.run_dir):
            out[cell.cell_id] = "partial"
        elif cell.cell_id in failed:
            out[cell.cell_id] = "failed before"
        else:
            out[cell.cell_id] = "todo"
    return out


def check_consistency(grid: Grid, rows: list[dict[str, Any]], pending: list[Cell]) -> None:
    """Refuse to mix configs: finished rows and half-finished run directories must match the grid's cells."""
    from o3srl.config import config_differences, config_json_dict, effective_config, sections_read

    done = finished_rows(rows)
    problems: list[str] = []
    for cell in grid.cells:
        row = done.get(cell.cell_id)
        if row is not None and "config" in row:
            diff = config_differences(
                effective_config(row["config"]),
                effective_config(config_json_dict(cell.config)),
                sections=sections_read(cell.config),
            )
            if diff:
                problems.append(f"{cell.cell_id} (finished row): {'; '.join(diff[:4])}")
    for cell in pending:
        saved = cell.run_dir / CONFIG_NAME
        if saved.exists():
            try:
                old = json.loads(saved.read_text())
            except json.JSONDecodeError:
                problems.append(f"{cell.cell_id}: {saved} is not valid JSON")
                continue
            diff = config_differences(
                effective_config(old),
                effective_config(config_json_dict(cell.train_config())),
                sections=sections_read(cell.config),
            )
            if diff:
                problems.append(f"{cell.cell_id} (run directory {cell.run_dir}): {'; '.join(diff[:4])}")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ConfigError(
            "the grid's configs differ from what was already run: "
            + " | ".join(problems[:5])
            + more
            + "; use another results file and runs_dir (--results / --runs-dir), or restore the grid"
        )


def check_datasets(cells: Iterable[Cell]) -> None:
    """Every dataset file the pending cells need must exist before any of them starts.

    The built-in default dataset (a cell without a dataset) is made here, once, rather than by parallel workers.
    """
    from o3srl.envs.registry import DEFAULT_TASK

    missing: dict[str, str] = {}
    builtin_ready = False
    for cell in cells:
        ds = cell.config.dataset
        if ds is None and cell.task == DEFAULT_TASK and not builtin_ready:
            from o3srl.behaviour.scripted import default_dataset

            default_dataset()
            builtin_ready = True
        if ds is not None and not Path(ds).exists():
            missing.setdefault(ds, cell.task)
    if missing:
        listed = ", ".join(f"{p} (task {t})" for p, t in list(missing.items())[:4])
        more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
        raise ConfigError(
            f"dataset file(s) missing: {listed}{more}; make them with 'o3srl data make TASK', set "
            "O3SRL_DATA_DIR, or fix the grid's dataset paths"
        )


OUTPUT_CHOICE = ("o3srl.output", "o3srl.best_members", "o3srl.best_pessimism", "o3srl.mix_slots", "o3srl.mix_min_share")
"""Config fields that choose an O3SRL run's output from its tail's readings after training (``best``, ``mix``,
``hull``): runs that differ in nothing else train the same, bit for bit."""
CHOSEN_OUTPUTS = ("best", "mix", "hull")  # o3srl.algos.o3srl.CHOSEN_OUTPUTS, here so that bench loads without JAX


def output_choice_only(saved: dict[str, Any], current: dict[str, Any], differences: list[str]) -> bool:
    """Whether two effective configs that differ in ``differences`` (:func:`o3srl.config.config_differences`) differ
    only in how the output is chosen from the same training (both O3SRL runs with a ``best`` or ``mix`` output)."""
    outputs = [c.get("o3srl", {}).get("output") for c in (saved, current)]
    return (
        bool(differences)
        and all(c.get("algo") == "o3srl" for c in (saved, current))
        and all(o in CHOSEN_OUTPUTS for o in outputs)
        and all(d.split(":", 1)[0] in OUTPUT_CHOICE for d in differences)
    )


def adoptable_rows(
    grid: Grid, pending: Iterable[Cell], sources: Sequence[str | os.PathLike[str]]
) -> list[dict[str, Any]]:
    """Rows for ``pending`` cells taken over from other results files: a finished row whose task, cost limit, seed,
    config (all but machine-local fields) and dataset hash equal the cell's computes exactly what the cell would,
    so another grid need not train it again (e.g. the κ = 5 cells of the paper's grid from the κ = 5 grid).

    The adopted row gets the cell's id, grid, algorithm name and label, keeps the source's run directory and
    timings, and records where it came from in ``adopted_from``. A row whose config differs from the cell's only in
    how its output is chosen from the same training (:func:`output_choice_only`) is returned marked
    ``"rechoose": True``, for :func:`rechoose_row` to derive the cell's own run from it.
    """
    from o3srl.config import config_differences, config_json_dict, effective_config, sections_read
    from o3srl.io import file_sha256

    candidates: list[tuple[Path, dict[str, Any]]] = []
    for source in sources:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"--adopt: results file {str(source)!r} does not exist")
        candidates += [(path, r) for r in finished_rows(read_rows(path)).values() if "config" in r]
    hashes: dict[str, str | None] = {}

    def dataset_hash(cell: Cell) -> str | None:
        ds = cell.config.dataset
        if ds is None or not Path(ds).is_file():
            return None
        if ds not in hashes:
            hashes[ds] = file_sha256(ds)
        return hashes[ds]

    adopted = []
    for cell in pending:
        current, read = effective_config(config_json_dict(cell.config)), sections_read(cell.config)
        found: dict[str, Any] | None = None
        for path, row in candidates:
            if (row.get("task"), row.get("cost_limit"), row.get("seed")) != (cell.task, cell.cost_limit, cell.seed):
                continue
            if row.get("dataset_sha256") != dataset_hash(cell):
                continue
            saved = effective_config(row["config"])
            differences = config_differences(saved, current, sections=read)
            if differences and not output_choice_only(saved, current, differences):
                continue
            taken = {
                **row,
                **_base_row(cell, grid.name),
                "adopted_from": {"results": str(path), "grid": row.get("grid"), "cell_id": row["cell_id"]},
            }
            if not differences:
                found = taken
                break
            if found is None:  # the same training, another output: used when no identical row turns up
                found = {**taken, "rechoose": True}
        if found is not None:
            adopted.append(found)
    return adopted


def rechoose_row(cell: Cell, grid_name: str, row: dict[str, Any]) -> dict[str, Any]:
    """The cell's results row derived from ``row``, a finished run of the same training with another output
    (:func:`adoptable_rows`): its run directory is copied to the cell's, the cell's config written there, the output
    chosen again from the last checkpoint (:func:`o3srl.train.rechoose_output`) and evaluated as the cell's own
    evaluation would. The row keeps the source's training timings and records ``adopted_from`` and
    ``output_rechosen``."""
    import shutil

    from o3srl.config import dumps
    from o3srl.io import atomic_write_text
    from o3srl.train import rechoose_output

    source, target = Path(row["run_dir"]), Path(cell.run_dir)
    if not source.is_dir():
        raise O3SRLError(f"cannot derive {cell.cell_id}: the run directory {source} of its source row is missing")
    if target.exists():
        raise O3SRLError(
            f"cannot derive {cell.cell_id} from {source}: {target} already exists (remove it to derive the cell)"
        )
    shutil.copytree(source, target)
    try:
        atomic_write_text(target / CONFIG_NAME, dumps(cell.train_config().resolved()))  # as its training writes it
        rechoose_output(target)
        timing = {k: row.get(k) for k in ("train_seconds", "sitting_seconds", "resumed_from_step", "pack")}
        derived = _evaluate_cell(cell, grid_name, {**timing, "started_at": _now()})
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)  # nothing half-written
        raise
    return {**derived, "adopted_from": row["adopted_from"], "output_rechosen": True}


def run_grid(
    grid: Grid,
    *,
    executor: Literal["local", "ray"] = "local",
    workers: int | None = None,
    address: str | None = None,
    max_retries: int = 1,
    progress: bool = True,
    csv: bool = True,
    log: Callable[[str], None] | None = None,
    adopt: Sequence[str | os.PathLike[str]] = (),
    pack: int | None = None,
    stage: Stage = "all",
) -> BenchSummary:
    """Run every unfinished cell of ``grid`` and append one row per finished (or failed) attempt to its results.

    ``adopt``: other results files whose identical finished cells are taken over instead of run
    (:func:`adoptable_rows`). ``pack``: cells trained as one program at most (default: the grid's, else
    :func:`default_pack_size`). ``stage``: ``all`` trains and evaluates; ``train`` only trains (no rows are written:
    the run directories hold the result); ``evaluate`` only evaluates cells whose training is finished and writes
    their rows, from the run directories alone (no dataset needed)."""
    if max_retries < 0:
        raise ConfigError(f"max_retries must be ≥ 0, got {max_retries}")
    if stage not in ("all", "train", "evaluate"):
        raise ConfigError(f"unknown stage {stage!r}; use 'all', 'train' or 'evaluate'")
    pack, workers = _pack_and_workers(grid, pack, workers)
    if executor not in ("local", "ray"):
        raise ConfigError(f"unknown executor {executor!r}; use 'local' or 'ray'")
    t0 = time.time()
    # Check first, without creating anything, so that bad input leaves no files behind; plan again under the lock.
    if stage != "evaluate":
        check_datasets(_pending(grid))
    else:
        _pending(grid)
    writer = ResultsWriter(grid.results)
    try:
        pending = _pending(grid)
        taken = _adopt(grid, pending, adopt, writer, log or print) if adopt else 0
        if taken:
            pending = _pending(grid)
        summary = BenchSummary(total=len(grid.cells), skipped=len(grid.cells) - len(pending), adopted=taken)
        pending = _cells_of_stage(pending, stage, summary)
        rows = _RowHandler(grid, writer, summary, max_retries, progress, log)
        try:
            if pending:
                if executor == "local":
                    _run_local(pending, grid.name, workers, max_retries, rows.final, stage, pack)
                else:
                    _run_ray(pending, grid.name, address, max_retries, rows.final, stage)
        finally:
            rows.close()
            if csv:
                write_csv(read_rows(grid.results), grid.results.with_suffix(".csv"))
    finally:
        writer.close()
    summary.seconds = time.time() - t0
    return summary


def _pack_and_workers(grid: Grid, pack: int | None, workers: int | None) -> tuple[int, int]:
    """The pack size (given, else the grid's, else the machine's default) and the number of worker processes
    (given, else one per core, or :data:`ACCELERATOR_WORKERS` sharing an accelerator)."""
    pack = grid.pack if pack is None else pack
    accelerator = pack is None and accelerator_present()
    pack = (ACCELERATOR_PACK if accelerator else 1) if pack is None else pack
    if pack < 1:
        raise ConfigError(f"pack must be ≥ 1 (cells trained as one program), got {pack}")
    if workers is None:
        workers = min(ACCELERATOR_WORKERS, os.cpu_count() or 1) if accelerator else (os.cpu_count() or 1)
    if workers < 0:
        raise ConfigError(f"workers must be ≥ 0, got {workers}")
    return pack, workers


def _pending(grid: Grid) -> list[Cell]:
    """The cells without a finished row, after checking that nothing already run differs from the grid."""
    rows = read_rows(grid.results)
    done = finished_rows(rows)
    pending = [c for c in grid.cells if c.cell_id not in done]
    check_consistency(grid, rows, pending)
    return pending


def _adopt(
    grid: Grid,
    pending: list[Cell],
    sources: Sequence[str | os.PathLike[str]],
    writer: ResultsWriter,
    log: Callable[[str], None],
) -> int:
    """Append the rows that ``pending`` cells can take over from other results files; returns how many."""
    taken = adoptable_rows(grid, pending, sources)
    cells = {c.cell_id: c for c in pending}
    for row in taken:
        if row.pop("rechoose", False):
            row = rechoose_row(cells[row["cell_id"]], grid.name, row)
            how = "its output chosen again"
        else:
            how = "as it is"
        writer.append(row)
        log(f"adopted {row['cell_id']} from {row['adopted_from']['cell_id']} ({row['adopted_from']['results']}), {how}")
    return len(taken)


def _cells_of_stage(pending: list[Cell], stage: Stage, summary: BenchSummary) -> list[Cell]:
    """The pending cells the stage works on: ``train`` skips cells already trained, ``evaluate`` leaves untrained
    cells alone (both counted in ``summary``)."""
    if stage == "train":
        trained = [c for c in pending if is_trained(c)]
        summary.skipped += len(trained)
        return [c for c in pending if not is_trained(c)]
    if stage == "evaluate":
        untrained = [c for c in pending if not is_trained(c)]
        summary.untrained = len(untrained)
        return [c for c in pending if is_trained(c)]
    return pending


class _RowHandler:
    """The driver's side of the executors: each row as it arrives is recorded, counted, reported and shown on the
    progress bar; :meth:`final` says whether the cell is to be tried again."""

    def __init__(
        self,
        grid: Grid,
        writer: ResultsWriter,
        summary: BenchSummary,
        max_retries: int,
        progress: bool,
        log: Callable[[str], None] | None,
    ) -> None:
        self.writer, self.summary, self.max_retries = writer, summary, max_retries
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=len(grid.cells),
                initial=summary.skipped,
                unit="cell",
                desc=f"grid {grid.name}",
                dynamic_ncols=True,
            )
        self.say = log or (self.bar.write if self.bar is not None else print)

    def row(self, row: dict[str, Any]) -> bool:
        """Record one row; returns whether its cell failed (and may be tried again)."""
        if row["status"] == "trained":  # stage train: the run directory is the record
            self.summary.trained += 1
            self.say(f"trained {row['cell_id']} ({row['train_seconds']:.0f} s, pack of {row['pack']})")
            self._advance()
            return False
        self.writer.append(row)
        if row["status"] == "ok":
            self.summary.finished += 1
            m = row["metrics"]
            self.say(
                f"ok      {row['cell_id']}: normalized reward {m['eval/normalized_reward']:.3f}, "
                f"normalized cost {m['eval/normalized_cost']:.3f} (train {row['train_seconds']:.0f} s, "
                f"eval {row['eval_seconds']:.0f} s)"
            )
            self._advance()
            return False
        self.say(f"failed  {row['cell_id']} (attempt {row.get('attempt')}): {row['error'].splitlines()[0][:300]}")
        return True

    def final(self, row: dict[str, Any]) -> bool:
        """:meth:`row`, and a failure past the last retry counted as the cell's final failure."""
        retry = self.row(row)
        if retry and (row.get("attempt") or 0) > self.max_retries:
            self.summary.failed += 1
            self.summary.failed_cells.append(row["cell_id"])
        return retry

    def _advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------------------------------------- command line
def cli_bench(
    grid: Positional[typing.Annotated[str, tyro_arg(metavar="GRID.toml")]],
    executor: Literal["local", "ray"] = "local",
    workers: int | None = None,
    address: str | None = None,
    max_retries: int = 1,
    results: str | None = None,
    runs_dir: str | None = None,
    dry_run: bool = False,
    csv: bool = True,
    tasks: tuple[str, ...] = (),
    algorithms: tuple[str, ...] = (),
    adopt: tuple[str, ...] = (),
    pack: int | None = None,
    stage: Stage = "all",
) -> int:
    """Run an experiment grid (tasks × algorithms × cost limits × seeds); re-running skips finished cells.

    Args:
        grid: the grid TOML file (see docs/grids.md).
        executor: local: one single-threaded process per core on this machine; ray: Ray tasks on a Ray cluster.
        workers: local executor: parallel processes (default: the number of cores; 0: in this process).
        address: ray executor: the cluster address (default: $RAY_ADDRESS, else a local Ray instance).
        max_retries: how often a failed cell is tried again before it is recorded as failed for good.
        results: the results JSONL file (default: the grid's 'results').
        runs_dir: where the cells' run directories go (default: the grid's 'runs_dir').
        dry_run: validate the grid and list the cells with their state, without running anything.
        csv: also write RESULTS.csv next to the JSONL file.
        tasks: run only the cells of these tasks, in this order (default: all of the grid's tasks); other rows stay.
        algorithms: run only the cells of these algorithm keys (the grid's [algorithms.KEY] tables), in this order
            (default: all); with --tasks, tasks first, then these algorithms within each. Other rows stay.
        adopt: results files of other grids: a finished row there with the same task, cost limit, seed, config and
            dataset as a cell here is copied in (marked ``adopted_from``) instead of training the cell again.
        pack: cells on one dataset that differ only in seed, cost limit or fixed λ are trained as one vmapped
            program, at most this many (default: the grid's 'pack', else 1 on a CPU and 32 on an accelerator).
        stage: all: train and evaluate; train: only train (e.g. on an accelerator machine without the simulators);
            evaluate: only evaluate the cells whose training is finished, from their run directories.
    """
    loaded = load_grid(grid, results=results, runs_dir=runs_dir)
    if algorithms:
        loaded = select_algorithms(loaded, algorithms)
    if tasks:
        loaded = select_tasks(loaded, tasks)  # a stable sort: the algorithms' order holds within each task
    if dry_run:
        states = cell_states(loaded, read_rows(loaded.results))
        for cell in loaded.cells:
            print(f"{states[cell.cell_id]:<14} {cell.cell_id}")
        counts = {s: list(states.values()).count(s) for s in dict.fromkeys(states.values())}
        print(
            f"{len(loaded.cells)} cells ({', '.join(f'{n} {s}' for s, n in counts.items())}); "
            f"results: {loaded.results}; runs: {loaded.runs_dir}"
        )
        return 0
    summary = run_grid(
        loaded,
        executor=executor,
        workers=workers,
        address=address,
        max_retries=max_retries,
        csv=csv,
        adopt=adopt,
        pack=pack,
        stage=stage,
    )
    if stage == "train":
        print(
            f"grid {loaded.name}: {summary.trained} cells trained now, {summary.skipped} already trained or done, "
            f"{summary.failed} failed, in {summary.seconds:.0f} s; evaluate them with --stage evaluate"
        )
    else:
        untrained = f", {summary.untrained} not trained yet (skipped)" if stage == "evaluate" else ""
        print(
            f"grid {loaded.name}: {summary.finished} cells finished now, {summary.adopted} adopted, "
            f"{summary.skipped - summary.adopted} already done, "
            f"{summary.failed} failed{untrained}, in {summary.seconds:.0f} s; results: {loaded.results}"
        )
    if summary.failed:
        print(
            "failed cells (re-run the same command to try them again): " + ", ".join(summary.failed_cells),
            file=sys.stderr,
        )
        return 1
    return 0
