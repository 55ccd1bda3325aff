"""The ``o3srl`` command line: a thin dispatcher over command functions that live beside the code they drive.

Each command is a plain function whose typed, documented parameters (or config dataclass) tyro turns into flags and
``--help``. Commands are imported only when called, so ``o3srl --help`` stays fast. Any :class:`O3SRLError` (bad
input, wrong config, unknown task) ends as one ``error: …`` line on stderr and exit status 2.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

from o3srl.errors import O3SRLError

# name -> (module:function, one-line help). "data" holds its own subcommands. Commands in RAW_ARGV parse their
# own arguments (``fn(argv, prog)``): ``train`` does, to put the chosen task's preset under the flags.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("o3srl.train:cli_train", "train an algorithm (O3SRL by default) and evaluate the final policy"),
    "eval": ("o3srl.train:cli_eval", "re-evaluate the policy saved in a run directory"),
    "bench": ("o3srl.bench:cli_bench", "run an experiment grid (GRID.toml); re-running skips finished cells"),
    "report": ("o3srl.report:cli_report", "write a markdown report with tables and plots from a results file"),
}
RAW_ARGV = {"o3srl.train:cli_train"}
DATA_COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("o3srl.data.info:cli_info", "summarise a dataset file (episodes, returns, safe frontier, plot)"),
    "make": ("o3srl.behaviour.make:cli_make", "make a DSRL-format dataset for a task by rolling out its behaviour zoo"),
    "train-behaviour": ("o3srl.behaviour.zoo:cli_train_behaviour", "retrain a task's behaviour-policy zoo (PPO-Lag)"),
    "compare": ("o3srl.data.compare:cli_compare", "check that two dataset files hold the same data within a tolerance"),
}
EXTRAS_COMMANDS: dict[str, tuple[str, str]] = {
    "install": ("o3srl.envs.extras:cli_install", "install an optional simulator (safety-gymnasium) into this Python"),
}
GROUPS: dict[str, tuple[dict[str, tuple[str, str]], str]] = {
    "data": (DATA_COMMANDS, "dataset commands"),
    "extras": (EXTRAS_COMMANDS, "optional simulators"),
}
"""Command groups: ``o3srl GROUP COMMAND ...``."""


def _load(target: str) -> Callable[..., object]:
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def _usage(prog: str, table: dict[str, tuple[str, str]], extra: dict[str, str] | None = None) -> str:
    rows = {name: doc for name, (_, doc) in table.items()}
    rows.update(extra or {})
    width = max(len(n) for n in rows)
    lines = [f"usage: {prog} COMMAND [ARGS...]   ({prog} COMMAND --help for a command's options)", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {doc}" for name, doc in rows.items()]
    return "\n".join(lines)


def _dispatch(
    prog: str, table: dict[str, tuple[str, str]], argv: list[str], extra: dict[str, str] | None = None
) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(prog, table, extra))
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name in GROUPS and prog == "o3srl":
        return _dispatch(f"o3srl {name}", GROUPS[name][0], rest)
    if name == "--version":
        from o3srl import __version__

        print(__version__)
        return 0
    if name not in table:
        print(f"error: unknown command {name!r}\n\n{_usage(prog, table, extra)}", file=sys.stderr)
        return 2
    import tyro

    target = table[name][0]
    fn = _load(target)
    if target in RAW_ARGV:
        result = fn(rest, f"{prog} {name}")
    else:
        result = tyro.cli(fn, args=rest, prog=f"{prog} {name}")
    return int(result) if isinstance(result, int) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``o3srl`` console script; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        groups = {name: f"{doc}: " + ", ".join(table) for name, (table, doc) in GROUPS.items()}
        return _dispatch("o3srl", COMMANDS, args, extra=groups)
    except O3SRLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file-system fault no command anticipated (unwritable, under a file, disk full)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
