"""Experiment grids: the TOML file, its validation, and its expansion into cells (one training run each).

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

The whole grid is validated (keys, types, tasks, every cell's resolved config) before anything runs, so a typo
fails in a second with one clear :class:`ConfigError`, not after hours. A cell has a stable id
(``task__algorithm__k<κ>__s<seed>``) and a deterministic run directory under ``runs_dir``. Running a grid is the
job of :mod:`o3srl.bench`; its results file belongs to :mod:`o3srl.results`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from o3srl.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from o3srl.config import TrainConfig

# Like o3srl.bench, this module does not import JAX (o3srl.config) at module level: worker processes import it.

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
    """Cells trained as one program at most (None: the machine's default, :func:`o3srl.bench.default_pack_size`)."""


def cell_id(task: str, algorithm: str, cost_limit: float, seed: int) -> str:
    """Stable, file-name-safe id of a cell."""
    return f"{task}__{algorithm}__k{cost_limit:g}__s{seed}"


def check_overrides(overrides: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate dotted TrainConfig overrides (known keys, right types); returns them with numbers coerced."""
    from o3srl.config import TrainConfig, coerce, conforms, field_type, flatten_tables, type_name

    out: dict[str, Any] = {}
    for key, value in flatten_tables(overrides).items():
        if key in GRID_OWNED:
            raise ConfigError(f"{where}: {key!r} is set by the grid itself (tasks / cost_limits / seeds / runs_dir)")
        tp = field_type(TrainConfig, key)
        if dataclasses.is_dataclass(tp):
            raise ConfigError(f"{where}: {key!r} is a section; set its fields, e.g. {key}.<field> = ...")
        if not conforms(tp, value):
            raise ConfigError(f"{where}: {key} = {value!r} does not fit its type {type_name(tp)}")
        out[key] = coerce(tp, value)
    return out


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
    from o3srl.data.dataset import data_dir

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
    unknown = sorted(set(data) - GRID_KEYS)
    if unknown:
        raise ConfigError(f"unknown grid key(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(GRID_KEYS))}")
    name, description, pack = _header(data, name)
    tasks, kappas, seeds = _axes(data)
    defaults, per_task = _shared_overrides(data, tasks)
    algorithms = _algorithms(data)
    universe: dict[str, list[Any]] = {"task": tasks, "algorithm": list(algorithms), "cost_limit": kappas, "seed": seeds}
    per_cell = _per_cell_rules(data, universe)
    layers = _Layers(_dataset_pattern(data), defaults, per_task, algorithms, per_cell)
    _check_tasks(tasks, per_task)
    results_path = Path(results or _expect(data.get("results", f"results/{name}.jsonl"), str, "results")).absolute()
    runs_path = Path(runs_dir or _expect(data.get("runs_dir", f"runs/bench/{name}"), str, "runs_dir")).absolute()

    used: set[int] = set()
    cells = [
        _make_cell(layers, task, alg, kappa, seed, runs_path, (ti, ai), used)
        for (ti, task), (ai, alg), kappa, seed in itertools.product(
            enumerate(tasks), enumerate(algorithms), kappas, seeds
        )
    ]
    for j in range(len(layers.per_cell)):
        if j not in used:
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


def _header(data: dict[str, Any], default_name: str) -> tuple[str, str, int | None]:
    """The grid's name (a directory-safe word), description and pack size."""
    name = _expect(data.get("name", default_name), str, "name")
    if not NAME_RE.match(name):
        raise ConfigError(f"grid name {name!r} may hold only letters, digits and _.+=-")
    description = _expect(data.get("description", ""), str, "description")
    pack = data.get("pack")
    if pack is not None and (_expect(pack, int, "pack") < 1):
        raise ConfigError(f"pack must be an integer ≥ 1 (cells trained as one program), got {pack}")
    return name, description, pack


def _axes(data: dict[str, Any]) -> tuple[list[str], list[float], list[int]]:
    """The grid's tasks, cost limits (as floats, finite and ≥ 0) and seeds (≥ 0): non-empty, without duplicates."""
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
    return tasks, kappas, seeds


def _shared_overrides(data: dict[str, Any], tasks: list[str]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The ``[defaults]`` overrides and the ``[per_task.<task>]`` ones (of tasks in the grid only)."""
    defaults = check_overrides(_expect(data.get("defaults", {}), dict, "defaults"), "defaults")
    per_task_raw = _expect(data.get("per_task", {}), dict, "per_task")
    for task in per_task_raw:
        if task not in tasks:
            raise ConfigError(f"per_task has an entry for {task!r}, which is not in tasks {tasks}")
    per_task = {t: check_overrides(_expect(v, dict, f"per_task.{t}"), f"per_task.{t}") for t, v in per_task_raw.items()}
    return defaults, per_task


def _algorithms(data: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """``[algorithms.<name>]``: name → (display label, overrides), in file order; at least one."""
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
    return algorithms


PerCellRule = tuple[dict[str, list[Any]], dict[str, Any]]
"""(the values of task / algorithm / cost_limit / seed a cell must have, the overrides it then gets)."""


def _per_cell_rules(data: dict[str, Any], universe: dict[str, list[Any]]) -> list[PerCellRule]:
    """``[[per_cell]]`` entries, each matching only values the grid has (``universe``: its tasks, algorithms, cost
    limits and seeds)."""
    rules: list[PerCellRule] = []
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
            for v in values:
                if (float(v) if key == "cost_limit" and isinstance(v, (int, float)) else v) not in universe[key]:
                    raise ConfigError(f"{where}: {key} = {v!r} is not in the grid's {key}s {universe[key]}")
            match[key] = [float(v) if key == "cost_limit" else v for v in values]
        rules.append((match, settings))
    return rules


def _dataset_pattern(data: dict[str, Any]) -> str | None:
    pattern = data.get("dataset")
    if pattern is not None:
        _expect(pattern, str, "dataset")
    return pattern


def _check_tasks(tasks: list[str], per_task: dict[str, dict[str, Any]]) -> None:
    """Task names name directories; a task that is not built in needs an ``env_id`` of its own."""
    from o3srl.envs.registry import TASKS

    for task in tasks:
        if not NAME_RE.match(task):
            raise ConfigError(f"task name {task!r} may hold only letters, digits and _.+=- (it names directories)")
        if task not in TASKS and "env_id" not in per_task.get(task, {}):
            known = ", ".join(sorted(TASKS))
            raise ConfigError(
                f'unknown task {task!r}: give [per_task.{task}] env_id = "module:Class" or a gymnasium id, '
                f"or use a built-in task: {known}"
            )


@dataclass(frozen=True)
class _Layers:
    """A grid's overrides, from the lowest layer to the highest: the dataset pattern, ``[defaults]``,
    ``[per_task]``, ``[algorithms]`` and the ``[[per_cell]]`` rules in file order."""

    dataset: str | None
    defaults: dict[str, Any]
    per_task: dict[str, dict[str, Any]]
    algorithms: dict[str, tuple[str, dict[str, Any]]]
    per_cell: list[PerCellRule]

    def overrides(self, task: str, alg: str, kappa: float, seed: int) -> tuple[dict[str, Any], list[int]]:
        """The cell's overrides, higher layers winning, and the indices of the per-cell rules that matched it."""
        overrides: dict[str, Any] = {}
        if self.dataset is not None:
            overrides["dataset"] = self.dataset
        overrides.update(self.defaults)
        overrides.update(self.per_task.get(task, {}))
        overrides.update(self.algorithms[alg][1])
        matched = []
        coords = {"task": task, "algorithm": alg, "cost_limit": kappa, "seed": seed}
        for j, (cell_match, cell_over) in enumerate(self.per_cell):
            if all(coords[k] in vs for k, vs in cell_match.items()):
                overrides.update(cell_over)
                matched.append(j)
        return overrides, matched


def _make_cell(
    layers: _Layers,
    task: str,
    alg: str,
    kappa: float,
    seed: int,
    runs_path: Path,
    order: tuple[int, int],
    used: set[int],
) -> Cell:
    """One cell with its fully resolved config (adds the per-cell rules it used to ``used``)."""
    from o3srl.config import apply_overrides, preset
    from o3srl.envs.registry import DEFAULT_TASK

    cid = cell_id(task, alg, kappa, seed)
    overrides, matched = layers.overrides(task, alg, kappa, seed)
    used.update(matched)
    if overrides.get("dataset") is not None:
        overrides["dataset"] = _format_dataset(overrides["dataset"], task, f"cell {cid}")
    elif task != DEFAULT_TASK:
        raise ConfigError(
            f"no dataset for task {task!r}: set the grid's dataset pattern (e.g. "
            f'"{{data_dir}}/{{task}}.hdf5") or [per_task.{task}] dataset = FILE'
        )
    overrides.update(
        {"task": task, "cost_limit": kappa, "seed": seed, "run_dir": str(runs_path / cid), "progress": False}
    )
    try:
        cfg = apply_overrides(preset(task), overrides).resolved()
    except ConfigError as exc:
        raise ConfigError(f"cell {cid}: {exc}") from None
    if cfg.eval_episodes < 1:
        raise ConfigError(f"cell {cid}: eval_episodes must be ≥ 1 in a grid (each cell ends with an evaluation)")
    return Cell(cid, task, alg, layers.algorithms[alg][0], kappa, seed, cfg, order=order)


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


def select_algorithms(grid: Grid, algorithms: Sequence[str]) -> Grid:
    """The part of ``grid`` of the given algorithm keys only (its ``[algorithms.KEY]`` tables), run in the order the
    keys are given: run the cheap baselines of a large grid first, or one method at a time. As with
    :func:`select_tasks`, the report's layout follows the grid file's order."""
    known = list(dict.fromkeys(c.algorithm for c in grid.cells))
    unknown = [a for a in algorithms if a not in known]
    if unknown:
        raise ConfigError(
            f"algorithm(s) {', '.join(map(repr, unknown))} are not in grid {grid.name!r} (its algorithms: "
            f"{', '.join(known)})"
        )
    rank = {a: i for i, a in enumerate(dict.fromkeys(algorithms))}
    chosen = sorted((c for c in grid.cells if c.algorithm in rank), key=lambda c: rank[c.algorithm])
    return dataclasses.replace(grid, cells=tuple(chosen))
