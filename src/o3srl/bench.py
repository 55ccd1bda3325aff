"""Experiment grids: tasks × algorithms × cost limits × seeds, one training run + final evaluation per cell.

A grid is a TOML file (see ``docs/grids.md`` and ``benchmarks/grids/``)::

    name = "kappa5"
    tasks = ["OfflineBallRun-v0", "OfflineCarRun-v0"]
    cost_limits = [5]
    seeds = [0, 1, 2]
    dataset = "{data_dir}/{task}.hdf5"     # {data_dir}: $O3SRL_DATA_DIR or ~/.cache/o3srl/datasets
    results = "results/kappa5.jsonl"
    runs_dir = "runs/bench/kappa5"

    [defaults]                   # TrainConfig overrides for every cell
    eval_episodes = 20
    [per_task."OfflineCarRun-v0"]   # ... for one task (also: dataset, env_id, reward_min/max)
    steps = 50000
    [algorithms.o3srl]           # a named algorithm = TrainConfig overrides (+ an optional display label)
    algo = "o3srl"
    [algorithms.td3bc-lambda0]
    algo = "td3bc"
    fixed_lambda = 0.0
    [[per_cell]]                 # overrides for the cells it matches (task / algorithm / cost_limit / seed)
    task = "OfflineCarRun-v0"
    algorithm = "o3srl"
    set = { "o3srl.num_arms" = 10 }

Why the design is as it is:

- The whole grid is validated (keys, types, tasks, every cell's resolved config) before anything runs, so a typo
  fails in a second with one clear :class:`ConfigError`, not after hours.
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
import re
import socket
import sys
import time
import traceback
import types
import typing
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tyro.conf import Positional
from tyro.conf import arg as tyro_arg

from o3srl.errors import ConfigError, O3SRLError
from o3srl.rundir import CONFIG_NAME, json_default

if typing.TYPE_CHECKING:  # pragma: no cover
    from o3srl.config import TrainConfig

SCHEMA_VERSION = 1
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
GRID_KEYS = {
    "name",
    "description",
    "tasks",
    "cost_limits",
    "seeds",
    "dataset",
    "results",
    "runs_dir",
    "defaults",
    "per_task",
    "algorithms",
    "per_cell",
    "pack",
}
CELL_MATCH_KEYS = {"task", "algorithm", "cost_limit", "seed"}
# Fields the grid itself sets per cell; an override of them would make the cell lie about what it is.
GRID_OWNED = {"task", "cost_limit", "seed", "run_dir", "resume"}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]*$")
# Fields that may legitimately differ between sittings (machines, checkouts) without changing what a cell computes.
UNCOMPARED = {"run_dir", "dataset", "progress", "tensorboard"}


# ---------------------------------------------------------------------------------------------------- grid model
@dataclass(frozen=True)
class Cell:
    """One training run + evaluation of the grid; ``config`` is fully resolved (run_dir set, progress off)."""

    cell_id: str
    task: str
    algorithm: str
    label: str
    cost_limit: float
    seed: int
    config: TrainConfig
    order: tuple[int, int] = (0, 0)
    """(task index, algorithm index) in the grid file: the report lays its tables out in this order."""

    @property
    def run_dir(self) -> Path:
        return Path(str(self.config.run_dir))

    def train_config(self) -> TrainConfig:
        """The config the run trains with: evaluation is done by the cell itself, so it can be timed apart."""
        return dataclasses.replace(self.config, eval_episodes=0)


@dataclass(frozen=True)
class Grid:
    name: str
    path: str
    results: Path
    runs_dir: Path
    cells: tuple[Cell, ...]
    description: str = ""
    pack: int | None = None
    """Cells trained as one program at most (None: the machine's default, :func:`default_pack_size`)."""


def cell_id(task: str, algorithm: str, cost_limit: float, seed: int) -> str:
    """Stable, file-name-safe id of a cell."""
    return f"{task}__{algorithm}__k{cost_limit:g}__s{seed}"


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """TOML tables (``td3bc.hidden = [..]`` or ``[defaults.td3bc]``) → dotted keys for ``apply_overrides``."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _conforms(tp: Any, value: Any) -> bool:
    """Whether a TOML value fits a config field's annotation (Literal, Optional, int, float, bool, str, tuples)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin is Literal:
        return any(value == v and type(value) is type(v) for v in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(t, value) for t in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_conforms(args[0], v) for v in value)
        return len(args) == len(value) and all(_conforms(a, v) for a, v in zip(args, value))
    return True  # annotations this checker does not know are left to the config's own validation


def _coerce(tp: Any, value: Any) -> Any:
    """Integers given for float fields become floats, so saved configs compare equal across sittings."""
    if tp is float and isinstance(value, int):
        return float(value)
    args = typing.get_args(tp)
    if (
        typing.get_origin(tp) in (typing.Union, types.UnionType)
        and float in args
        and isinstance(value, int)
        and not isinstance(value, bool)
        and int not in args
    ):
        return float(value)
    if typing.get_origin(tp) is tuple and isinstance(value, (list, tuple)) and args:
        inner = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        if inner is not None:
            return tuple(_coerce(inner, v) for v in value)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and isinstance(value, list):
        for arg in args:
            if typing.get_origin(arg) is tuple and _conforms(arg, value):
                return _coerce(arg, value)
    return value


def _field_type(root: type, dotted: str) -> Any:
    """The annotation of a dotted TrainConfig field, or a ConfigError naming the unknown part."""
    cls: Any = root
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        hints = typing.get_type_hints(cls)
        fields = {f.name for f in dataclasses.fields(cls)}
        if part not in fields:
            where = ".".join(parts[:i]) or "the training config"
            raise ConfigError(
                f"unknown config key {dotted!r} (no field {part!r} in {where}; known: {', '.join(sorted(fields))})"
            )
        tp = hints[part]
        if i < len(parts) - 1:
            if not dataclasses.is_dataclass(tp):
                raise ConfigError(f"config key {dotted!r}: {'.'.join(parts[: i + 1])} is not a section")
            cls = tp
    return tp


def check_overrides(overrides: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate dotted TrainConfig overrides (known keys, right types); returns them with numbers coerced."""
    from o3srl.config import TrainConfig

    out: dict[str, Any] = {}
    for key, value in _flatten(overrides).items():
        if key in GRID_OWNED:
            raise ConfigError(f"{where}: {key!r} is set by the grid itself (tasks / cost_limits / seeds / runs_dir)")
        tp = _field_type(TrainConfig, key)
        if dataclasses.is_dataclass(tp):
            raise ConfigError(f"{where}: {key!r} is a section; set its fields, e.g. {key}.<field> = ...")
        if not _conforms(tp, value):
            raise ConfigError(f"{where}: {key} = {value!r} does not fit its type {_type_name(tp)}")
        out[key] = _coerce(tp, value)
    return out


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return str(tp).replace("typing.", "")


def _expect(value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(value, kind) or (kind in (int, float, (int, float)) and isinstance(value, bool)):
        raise ConfigError(f"{what} must be {_kind_name(kind)}, got {value!r}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {dict: "a table", list: "a list", str: "a string", int: "an integer", float: "a number", bool: "true/false"}
    if isinstance(kind, tuple):
        return " or ".join(names.get(k, k.__name__) for k in kind)
    return names.get(kind, kind.__name__)


def _unique_list(data: dict[str, Any], key: str, item: type | tuple[type, ...]) -> list[Any]:
    if key not in data:
        raise ConfigError(f"the grid needs {key!r} (a non-empty list)")
    values = _expect(data[key], list, key)
    if not values:
        raise ConfigError(f"{key} must not be empty")
    for v in values:
        _expect(v, item, f"every entry of {key}")
    if len(set(values)) != len(values):
        raise ConfigError(f"{key} has duplicates: {values}")
    return values


def _format_dataset(pattern: str, task: str, where: str) -> str:
    """``{task}``, ``{data_dir}``, ``$VARS`` and ``~`` in a dataset path; relative paths are taken from the cwd."""
    from o3srl.data.generate import data_dir

    expanded = os.path.expanduser(os.path.expandvars(pattern))
    unset = re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", expanded)
    if unset:
        raise ConfigError(
            f"{where}: dataset {pattern!r} uses environment variable {unset[0]} which is not set "
            "(or use {data_dir}, which falls back to ~/.cache/o3srl/datasets)"
        )
    try:
        path = expanded.format(task=task, data_dir=str(data_dir()))
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"{where}: dataset {pattern!r}: only {{task}} and {{data_dir}} can be filled in ({exc})"
        ) from None
    return str(Path(path).absolute())


def parse_grid(
    data: dict[str, Any], *, name: str, path: str = "<grid>", results: str | None = None, runs_dir: str | None = None
) -> Grid:
    """Validate a parsed grid file and expand it into resolved cells; any problem is one :class:`ConfigError`."""
    from o3srl.config import apply_overrides, preset
    from o3srl.envs.registry import DEFAULT_TASK, TASKS

    unknown = sorted(set(data) - GRID_KEYS)
    if unknown:
        raise ConfigError(f"unknown grid key(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(GRID_KEYS))}")
    name = _expect(data.get("name", name), str, "name")
    if not NAME_RE.match(name):
        raise ConfigError(f"grid name {name!r} may hold only letters, digits and _.+=-")
    description = _expect(data.get("description", ""), str, "description")
    pack = data.get("pack")
    if pack is not None and (_expect(pack, int, "pack") < 1):
        raise ConfigError(f"pack must be an integer ≥ 1 (cells trained as one program), got {pack}")
    tasks = _unique_list(data, "tasks", str)
    kappas = [float(k) for k in _unique_list(data, "cost_limits", (int, float))]
    seeds = _unique_list(data, "seeds", int)
    for k in kappas:
        if not math.isfinite(k) or k < 0:
            raise ConfigError(f"cost_limits must be finite and ≥ 0, got {k}")
    if len(set(kappas)) != len(kappas):
        raise ConfigError(f"cost_limits has duplicates: {kappas}")
    for s in seeds:
        if s < 0:
            raise ConfigError(f"seeds must be ≥ 0, got {s}")

    defaults = check_overrides(_expect(data.get("defaults", {}), dict, "defaults"), "defaults")
    per_task_raw = _expect(data.get("per_task", {}), dict, "per_task")
    for task in per_task_raw:
        if task not in tasks:
            raise ConfigError(f"per_task has an entry for {task!r}, which is not in tasks {tasks}")
    per_task = {t: check_overrides(_expect(v, dict, f"per_task.{t}"), f"per_task.{t}") for t, v in per_task_raw.items()}

    algos_raw = _expect(data.get("algorithms"), dict, "algorithms") if "algorithms" in data else None
    if not algos_raw:
        raise ConfigError("the grid needs at least one [algorithms.<name>] table (TrainConfig overrides)")
    algorithms: dict[str, tuple[str, dict[str, Any]]] = {}
    for alg, table in algos_raw.items():
        if not NAME_RE.match(alg):
            raise ConfigError(f"algorithm name {alg!r} may hold only letters, digits and _.+=- (it names directories)")
        table = dict(_expect(table, dict, f"algorithms.{alg}"))
        label = _expect(table.pop("label", alg), str, f"algorithms.{alg}.label")
        algorithms[alg] = (label, check_overrides(table, f"algorithms.{alg}"))

    per_cell: list[tuple[dict[str, list[Any]], dict[str, Any]]] = []
    for i, entry in enumerate(_expect(data.get("per_cell", []), list, "per_cell")):
        where = f"per_cell[{i}]"
        entry = dict(_expect(entry, dict, where))
        bad = sorted(set(entry) - CELL_MATCH_KEYS - {"set"})
        if bad:
            raise ConfigError(f"{where}: unknown key(s) {bad}; it takes {sorted(CELL_MATCH_KEYS)} to match and 'set'")
        if "set" not in entry:
            raise ConfigError(f"{where}: needs 'set', a table of TrainConfig overrides")
        settings = check_overrides(_expect(entry.pop("set"), dict, f"{where}.set"), f"{where}.set")
        match: dict[str, list[Any]] = {}
        for key, value in entry.items():
            values = value if isinstance(value, list) else [value]
            universe = {"task": tasks, "algorithm": list(algorithms), "cost_limit": kappas, "seed": seeds}[key]
            for v in values:
                if (float(v) if key == "cost_limit" and isinstance(v, (int, float)) else v) not in universe:
                    raise ConfigError(f"{where}: {key} = {v!r} is not in the grid's {key}s {universe}")
            match[key] = [float(v) if key == "cost_limit" else v for v in values]
        per_cell.append((match, settings))

    dataset_pattern = data.get("dataset")
    if dataset_pattern is not None:
        _expect(dataset_pattern, str, "dataset")
    for task in tasks:
        if not NAME_RE.match(task):
            raise ConfigError(f"task name {task!r} may hold only letters, digits and _.+=- (it names directories)")
        if task not in TASKS and "env_id" not in per_task.get(task, {}):
            known = ", ".join(sorted(TASKS))
            raise ConfigError(
                f'unknown task {task!r}: give [per_task.{task}] env_id = "module:Class" or a gymnasium id, '
                f"or use a built-in task: {known}"
            )

    results_path = Path(results or _expect(data.get("results", f"results/{name}.jsonl"), str, "results")).absolute()
    runs_path = Path(runs_dir or _expect(data.get("runs_dir", f"runs/bench/{name}"), str, "runs_dir")).absolute()

    cells: list[Cell] = []
    seen_used = [False] * len(per_cell)
    for ti, task in enumerate(tasks):
        for ai, (alg, (label, alg_overrides)) in enumerate(algorithms.items()):
            for kappa in kappas:
                for seed in seeds:
                    cid = cell_id(task, alg, kappa, seed)
                    overrides: dict[str, Any] = {}
                    if dataset_pattern is not None:
                        overrides["dataset"] = dataset_pattern
                    overrides.update(defaults)
                    overrides.update(per_task.get(task, {}))
                    overrides.update(alg_overrides)
                    for j, (cell_match, cell_over) in enumerate(per_cell):
                        coords = {"task": task, "algorithm": alg, "cost_limit": kappa, "seed": seed}
                        if all(coords[k] in vs for k, vs in cell_match.items()):
                            overrides.update(cell_over)
                            seen_used[j] = True
                    if overrides.get("dataset") is not None:
                        overrides["dataset"] = _format_dataset(overrides["dataset"], task, f"cell {cid}")
                    elif task != DEFAULT_TASK:
                        raise ConfigError(
                            f"no dataset for task {task!r}: set the grid's dataset pattern (e.g. "
                            f'"{{data_dir}}/{{task}}.hdf5") or [per_task.{task}] dataset = FILE'
                        )
                    overrides.update(
                        {
                            "task": task,
                            "cost_limit": kappa,
                            "seed": seed,
                            "run_dir": str(runs_path / cid),
                            "progress": False,
                        }
                    )
                    try:
                        cfg = apply_overrides(preset(task), overrides).resolved()
                    except ConfigError as exc:
                        raise ConfigError(f"cell {cid}: {exc}") from None
                    if cfg.eval_episodes < 1:
                        raise ConfigError(
                            f"cell {cid}: eval_episodes must be ≥ 1 in a grid (each cell ends with an evaluation)"
                        )
                    cells.append(Cell(cid, task, alg, label, kappa, seed, cfg, order=(ti, ai)))
    for j, used in enumerate(seen_used):
        if not used:
            raise ConfigError(f"per_cell[{j}] matches no cell of the grid")
    return Grid(
        name=name,
        path=path,
        results=results_path,
        runs_dir=runs_path,
        cells=tuple(cells),
        description=description,
        pack=pack,
    )


def load_grid(path: str | os.PathLike[str], *, results: str | None = None, runs_dir: str | None = None) -> Grid:
    """Read and validate a grid TOML file (see the module docstring for its keys)."""
    import tomllib

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"grid file {str(path)!r} does not exist")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    try:
        return parse_grid(data, name=p.stem, path=str(p), results=results, runs_dir=runs_dir)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def select_tasks(grid: Grid, tasks: Sequence[str]) -> Grid:
    """The part of ``grid`` on the given tasks only, run in the order the tasks are given: run a grid task by task
    (as their datasets become available) or spread it over machines that share nothing but the results file's
    rows. The report's layout does not change: it follows the grid file's order (``Cell.order``)."""
    known = list(dict.fromkeys(c.task for c in grid.cells))
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise ConfigError(
            f"task(s) {', '.join(map(repr, unknown))} are not in grid {grid.name!r} (its tasks: {', '.join(known)})"
        )
    rank = {t: i for i, t in enumerate(dict.fromkeys(tasks))}
    chosen = sorted((c for c in grid.cells if c.task in rank), key=lambda c: rank[c.task])  # stable within a task
    return dataclasses.replace(grid, cells=tuple(chosen))


# ---------------------------------------------------------------------------------------------------- results file
def read_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every row of a results JSONL file; a torn last line (a crash mid-write) is ignored, any other bad line is an
    error."""
    p = Path(path)
    if not p.exists():
        return []
    text = p.read_text(encoding="utf-8")
    lines = text.split("\n")
    rows: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # no newline after it: an unfinished write
                break
            raise O3SRLError(f"{path}: line {i + 1} is not valid JSON") from None
        if not isinstance(row, dict):
            raise O3SRLError(f"{path}: line {i + 1} is not a JSON object")
        rows.append(row)
    return rows


def finished_rows(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last successful row per cell id."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row.get("status") == "ok" and "cell_id" in row:
            out[row["cell_id"]] = row
    return out


class ResultsWriter:
    """The only writer of a results file: an exclusive lock, whole-line appends, fsync after each row."""

    def __init__(self, path: Path) -> None:
        import fcntl

        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = open(str(path) + ".lock", "w")  # noqa: SIM115 — held until close()
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise O3SRLError(f"another 'o3srl bench' is writing {path} (lock {path}.lock is held)") from None
        self._cut_torn_tail()
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 — held until close()

    def _cut_torn_tail(self) -> None:
        """A crash mid-append can leave a last line without its newline; cut it so the next row starts clean."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as f:
            data = f.read()
            if data.endswith(b"\n"):
                return
            keep = data.rfind(b"\n") + 1
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
        print(f"warning: cut an unfinished last line ({len(data) - keep} bytes) from {self.path}", file=sys.stderr)

    def append(self, row: dict[str, Any]) -> None:
        self._file.write(json.dumps(row, sort_keys=False, default=json_default) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()
        self._lock.close()


CSV_COLUMNS = (
    "cell_id",
    "status",
    "grid",
    "task",
    "algorithm",
    "label",
    "cost_limit",
    "seed",
    "normalized_reward",
    "normalized_cost",
    "safe",
    "reward",
    "cost",
    "frontier_fraction",
    "episodes",
    "train_seconds",
    "eval_seconds",
    "reward_reference",
    "dataset_sha256",
    "o3srl_version",
    "run_dir",
    "error",
)


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    """A flat CSV view of the results (one line per row, eval metrics without their prefix), written atomically."""
    import csv
    import io

    from o3srl.io import atomic_write_text

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        flat = dict(row)
        flat.update({k.removeprefix("eval/"): v for k, v in (row.get("metrics") or {}).items()})
        writer.writerow({k: flat.get(k, "") for k in CSV_COLUMNS})
    return atomic_write_text(path, buf.getvalue())


# ---------------------------------------------------------------------------------------------------- one cell
def _config_dict(cfg: TrainConfig) -> dict[str, Any]:
    from o3srl.config import to_dict

    return json.loads(json.dumps(to_dict(cfg)))


def config_differences(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts, ignoring machine-local fields; a field added
    since ``saved`` was written counts as holding its old-behaviour value there (``config.ADDED_FIELDS``)."""
    from o3srl.config import ADDED_FIELDS

    out: list[str] = []
    for key in sorted(set(saved) | set(current)):
        if not prefix and key in UNCOMPARED:
            continue
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif key not in saved and f"{prefix}{key}" in ADDED_FIELDS and b == ADDED_FIELDS[f"{prefix}{key}"]:
            continue
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} → {b!r}")
    return out


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
    """Whether the cell's run directory holds its finished training (a final policy and a checkpoint at its last
    step): what ``--stage evaluate`` needs."""
    from o3srl.checkpoint import CheckpointError
    from o3srl.rundir import checkpoint_step, has_policy

    if not has_policy(cell.run_dir):
        return False
    try:
        step = checkpoint_step(cell.run_dir)
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
        resume_dirs: list[str | None] = []
        for cell in cells:
            if has_checkpoint(cell.run_dir):
                resumed_from.append(_checkpoint_step(cell))
                resume_dirs.append(str(cell.run_dir))
            else:
                # Killed before its first checkpoint: start over, without the dead attempt's log rows.
                clear_logs(cell.run_dir)
                resumed_from.append(0)
                resume_dirs.append(None)
        run_pack([c.train_config() for c in cells], resume_dirs=resume_dirs)
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
        "config": _config_dict(cfg),
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

    message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return {
        **_base_row(cell, grid_name),
        "status": "failed",
        "error": message[:2000],
        "traceback": (tb or "")[-4000:],
        "attempt": attempt,
        "seconds": seconds,
        "run_dir": str(cell.run_dir),
        "config": _config_dict(cell.config),
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
    done = finished_rows(rows)
    problems: list[str] = []
    for cell in grid.cells:
        row = done.get(cell.cell_id)
        if row is not None and "config" in row:
            diff = config_differences(row["config"], _config_dict(cell.config))
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
            diff = config_differences(old, _config_dict(cell.train_config()))
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
            from o3srl.data.generate import default_dataset

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


def adoptable_rows(
    grid: Grid, pending: Iterable[Cell], sources: Sequence[str | os.PathLike[str]]
) -> list[dict[str, Any]]:
    """Rows for ``pending`` cells taken over from other results files: a finished row whose task, cost limit, seed,
    config (all but machine-local fields) and dataset hash equal the cell's computes exactly what the cell would,
    so another grid need not train it again (e.g. the κ = 5 cells of the paper's grid from the κ = 5 grid).

    The adopted row gets the cell's id, grid, algorithm name and label, keeps the source's run directory and
    timings, and records where it came from in ``adopted_from``.
    """
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
        current = _config_dict(cell.config)
        for path, row in candidates:
            if (row.get("task"), row.get("cost_limit"), row.get("seed")) != (cell.task, cell.cost_limit, cell.seed):
                continue
            if config_differences(row["config"], current) or row.get("dataset_sha256") != dataset_hash(cell):
                continue
            adopted.append(
                {
                    **row,
                    **_base_row(cell, grid.name),
                    "adopted_from": {"results": str(path), "grid": row.get("grid"), "cell_id": row["cell_id"]},
                }
            )
            break
    return adopted


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
    pack = grid.pack if pack is None else pack
    accelerator = pack is None and accelerator_present()
    pack = (ACCELERATOR_PACK if accelerator else 1) if pack is None else pack
    if pack < 1:
        raise ConfigError(f"pack must be ≥ 1 (cells trained as one program), got {pack}")
    if workers is None:
        workers = min(ACCELERATOR_WORKERS, os.cpu_count() or 1) if accelerator else (os.cpu_count() or 1)
    if workers < 0:
        raise ConfigError(f"workers must be ≥ 0, got {workers}")
    if executor not in ("local", "ray"):
        raise ConfigError(f"unknown executor {executor!r}; use 'local' or 'ray'")
    t0 = time.time()

    def plan() -> list[Cell]:
        rows = read_rows(grid.results)
        done = finished_rows(rows)
        pending = [c for c in grid.cells if c.cell_id not in done]
        check_consistency(grid, rows, pending)
        return pending

    # Check first, without creating anything, so that bad input leaves no files behind; plan again under the lock.
    if stage != "evaluate":
        check_datasets(plan())
    else:
        plan()
    writer = ResultsWriter(grid.results)
    try:
        pending = plan()
        taken = adoptable_rows(grid, pending, adopt) if adopt else []
        for row in taken:
            writer.append(row)
            (log or print)(
                f"adopted {row['cell_id']} from {row['adopted_from']['cell_id']} ({row['adopted_from']['results']})"
            )
        if taken:
            pending = plan()
        summary = BenchSummary(total=len(grid.cells), skipped=len(grid.cells) - len(pending))
        summary.adopted = len(taken)
        if stage == "train":
            trained = [c for c in pending if is_trained(c)]
            summary.skipped += len(trained)
            pending = [c for c in pending if not is_trained(c)]
        elif stage == "evaluate":
            untrained = [c for c in pending if not is_trained(c)]
            summary.untrained = len(untrained)
            pending = [c for c in pending if is_trained(c)]
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=len(grid.cells),
                initial=summary.skipped,
                unit="cell",
                desc=f"grid {grid.name}",
                dynamic_ncols=True,
            )
        say = log or (bar.write if bar is not None else print)

        def on_row(row: dict[str, Any]) -> bool:
            if row["status"] == "trained":  # stage train: the run directory is the record
                summary.trained += 1
                say(f"trained {row['cell_id']} ({row['train_seconds']:.0f} s, pack of {row['pack']})")
                if bar is not None:
                    bar.update(1)
                return False
            writer.append(row)
            if row["status"] == "ok":
                summary.finished += 1
                m = row["metrics"]
                say(
                    f"ok      {row['cell_id']}: normalized reward {m['eval/normalized_reward']:.3f}, "
                    f"normalized cost {m['eval/normalized_cost']:.3f} (train {row['train_seconds']:.0f} s, "
                    f"eval {row['eval_seconds']:.0f} s)"
                )
                if bar is not None:
                    bar.update(1)
                return False
            say(f"failed  {row['cell_id']} (attempt {row.get('attempt')}): {row['error'].splitlines()[0][:300]}")
            return True

        def on_final(row: dict[str, Any]) -> bool:
            retry = on_row(row)
            if retry and (row.get("attempt") or 0) > max_retries:
                summary.failed += 1
                summary.failed_cells.append(row["cell_id"])
            return retry

        try:
            if pending:
                if executor == "local":
                    _run_local(pending, grid.name, workers, max_retries, on_final, stage, pack)
                else:
                    _run_ray(pending, grid.name, address, max_retries, on_final, stage)
        finally:
            if bar is not None:
                bar.close()
            if csv:
                write_csv(read_rows(grid.results), grid.results.with_suffix(".csv"))
    finally:
        writer.close()
    summary.seconds = time.time() - t0
    return summary


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
        adopt: results files of other grids: a finished row there with the same task, cost limit, seed, config and
            dataset as a cell here is copied in (marked ``adopted_from``) instead of training the cell again.
        pack: cells on one dataset that differ only in seed, cost limit or fixed λ are trained as one vmapped
            program, at most this many (default: the grid's 'pack', else 1 on a CPU and 32 on an accelerator).
        stage: all: train and evaluate; train: only train (e.g. on an accelerator machine without the simulators);
            evaluate: only evaluate the cells whose training is finished, from their run directories.
    """
    loaded = load_grid(grid, results=results, runs_dir=runs_dir)
    if tasks:
        loaded = select_tasks(loaded, tasks)
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
