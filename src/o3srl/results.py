"""The results file of an experiment grid: one JSON line per finished (or failed) cell, written by one driver.

Only :class:`ResultsWriter` appends to it: an exclusive lock, one ``write`` per row, then flush and fsync; a torn
last line left by a crash is cut off before appending, and earlier rows are never rewritten. :func:`read_rows`
reads it back (``o3srl bench`` to skip finished cells, ``o3srl report`` for its tables); :func:`write_csv` writes
a flat CSV view beside it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from o3srl.errors import O3SRLError
from o3srl.rundir import json_default

SCHEMA_VERSION = 1
"""The version of a row's layout (each row's ``schema``)."""


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
