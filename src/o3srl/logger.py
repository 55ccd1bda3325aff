"""Metric sinks. Algorithms return flat dicts with namespaced keys; sinks only write them somewhere."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Protocol

from o3srl.errors import O3SRLError
from o3srl.rundir import METRICS_NAME as METRICS_NAME  # the file names belong to o3srl.rundir


class Sink(Protocol):
    def write(self, step: int, metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


def logged_seconds(path: str | Path) -> float | None:
    """Training-loop seconds recorded in a ``metrics.jsonl``, summed over its windows.

    Each row's ``time/steps_per_second`` covers the steps since the previous row, and a resumed run's file keeps only
    the rows up to its checkpoint, so the sum is the time spent on the steps the run has now — over every sitting of
    a resumed run, without the work a killed sitting lost. ``None`` when the file is missing or empty, or when a row
    lacks the rate.
    """
    rows = read_metrics(path)
    if not rows:
        return None
    total, previous = 0.0, 0
    for row in rows:
        rate = row.get("time/steps_per_second")
        if not rate:
            return None
        total += (row["step"] - previous) / rate
        previous = row["step"]
    return total


def _clean(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


class JsonlSink:
    """One JSON object per line: ``{"step": …, "<namespace>/<name>": …}``; flushed and fsynced per row."""

    def __init__(self, path: str | Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        if resume_step is not None and self.path.exists():
            self._truncate_after(resume_step)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 — held until close()

    def _truncate_after(self, step: int) -> None:
        """On resume, drop rows logged after the checkpoint so the file matches an uninterrupted run (a last row
        torn by a crash mid-write is dropped with a note)."""
        rows = _parse_lines(self.path, tolerate_torn_end=True)
        kept = [line for line, row in rows if row.get("step", 0) <= step]
        from o3srl.io import atomic_write_text

        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def write(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": step, **{k: _clean(v) for k, v in sorted(metrics.items())}}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


class TensorBoardSink:
    def __init__(self, log_dir: str | Path) -> None:
        try:
            from tensorboardX import SummaryWriter
        except ImportError as exc:
            raise O3SRLError(
                "TensorBoard logging needs the 'tensorboard' extra: pip install 'o3srl[tensorboard]'"
            ) from exc
        self._writer = SummaryWriter(str(log_dir))

    def write(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            if math.isfinite(float(value)):
                self._writer.add_scalar(key, float(value), step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` (``[]`` when it does not exist); a last line torn by a crash is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    return [row for _, row in _parse_lines(path, tolerate_torn_end=True, note=False)]


def _parse_lines(path: Path, *, tolerate_torn_end: bool, note: bool = True) -> list[tuple[str, dict[str, Any]]]:
    """``(line, row)`` for every line of a JSON-lines file. Only the last line may be damaged (a write cut short by
    a crash or ``kill -9``): it is dropped, with a note on stderr when ``note``; damage anywhere else is an error."""
    import sys

    try:
        lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    except OSError as exc:
        raise O3SRLError(f"{path} cannot be read ({exc.strerror or exc})") from None
    out: list[tuple[str, dict[str, Any]]] = []
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            if tolerate_torn_end and i == len(lines) - 1:
                if note:
                    print(
                        f"note: {path}: dropped its last line, which is incomplete ({len(line)} characters)",
                        file=sys.stderr,
                    )
                break
            raise O3SRLError(
                f"{path}: line {i + 1} is not a metrics row ({exc}); only a torn last line can be repaired"
            ) from None
        out.append((line, row))
    return out
