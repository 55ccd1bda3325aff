"""Metric sinks: JSONL rows (truncated on resume) and TensorBoard event files."""

from __future__ import annotations

import builtins
import math

import pytest

from o3srl.errors import O3SRLError
from o3srl.logger import JsonlSink, TensorBoardSink, logged_seconds, read_metrics


def test_jsonl_rows_and_resume_truncation(tmp_path):
    path = tmp_path / "metrics.jsonl"
    sink = JsonlSink(path)
    for step in (10, 20, 30):
        sink.write(step, {"loss/critic": step / 10, "eval/cost": math.nan})
    sink.close()
    rows = read_metrics(path)
    assert [r["step"] for r in rows] == [10, 20, 30]
    assert rows[0]["loss/critic"] == 1.0 and rows[0]["eval/cost"] is None  # NaN is written as null, valid JSON
    # A run resumed from its step-20 checkpoint drops the rows written after it.
    JsonlSink(path, resume_step=20).close()
    assert [r["step"] for r in read_metrics(path)] == [10, 20]


def test_logged_seconds_sum_the_windows(tmp_path):
    path = tmp_path / "metrics.jsonl"
    assert logged_seconds(path) is None  # no log yet
    sink = JsonlSink(path)
    sink.write(100, {"time/steps_per_second": 50.0})  # 100 steps in 2 s
    sink.write(300, {"time/steps_per_second": 100.0})  # 200 steps in 2 s
    sink.write(400, {"time/steps_per_second": 25.0})  # 100 steps in 4 s
    sink.close()
    assert logged_seconds(path) == pytest.approx(8.0)
    # Resumed from its step-300 checkpoint, the run redoes steps 301–400 in 1 s: the lost 4 s are not counted.
    sink = JsonlSink(path, resume_step=300)
    sink.write(400, {"time/steps_per_second": 100.0})
    sink.close()
    assert logged_seconds(path) == pytest.approx(5.0)
    sink = JsonlSink(path)
    sink.write(500, {"loss/critic": 1.0})  # a row without the rate: the total is unknown
    sink.close()
    assert logged_seconds(path) is None


def read_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    """Parse TensorBoard event files (TFRecord framing: u64 length, u32 crc, payload, u32 crc)."""
    import struct

    from tensorboardX.proto import event_pb2

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def test_tensorboard_sink_writes_scalars(tmp_path):
    sink = TensorBoardSink(tmp_path / "tb")
    sink.write(1, {"bandit/lambda": 2.5, "eval/cost": math.nan})
    sink.write(2, {"bandit/lambda": 1.25})
    sink.close()
    assert read_scalars(tmp_path / "tb") == {"bandit/lambda": [(1, 2.5), (2, 1.25)]}


def test_tensorboard_without_the_extra_names_it(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_tensorboardx(name, *args, **kwargs):
        if name.startswith("tensorboardX"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboardx)
    with pytest.raises(O3SRLError, match=r"o3srl\[tensorboard\]"):
        TensorBoardSink(tmp_path / "tb")
