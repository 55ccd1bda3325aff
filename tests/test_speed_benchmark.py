"""benchmarks/speed.py at a tiny size: every row is produced and the page's sections are kept apart (no timings
are checked)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SPEED = Path(__file__).parent.parent / "benchmarks" / "speed.py"


def _speed():
    spec = importlib.util.spec_from_file_location("speed_benchmark", SPEED)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_speed_benchmark_runs_at_a_tiny_size(tmp_path, monkeypatch):
    speed = _speed()
    monkeypatch.setattr(speed, "synthetic", lambda: _small(speed))
    out = tmp_path / "speed.md"
    out.write_text(
        "# Training speed\n\nWritten by hand.\n\n## CPU\n\n<!-- speed.py cpu begin -->\nold\n"
        "<!-- speed.py cpu end -->\n\nKept.\n"
    )
    lines = speed.main(
        [
            "--steps",
            "10",
            "--repeats",
            "1",
            "--packs",
            "2",
            "--e2e-steps",
            "0",
            "--hidden",
            "8",
            "--batch",
            "16",
            "--out",
            str(out),
        ]
    )
    text = out.read_text()
    assert text.startswith("# Training speed\n\nWritten by hand.") and text.rstrip().endswith("Kept.")
    assert "old" not in text and text.count("<!-- speed.py cpu begin -->") == 1
    for what in (
        "TD3+BC alone",
        "IQL inside O3SRL",
        "adaptive λ-player (cost model read every round)",
        "O3SRL, adaptive λ-player / oracle alone",
        "packed, 2 runs",
        "eager PyTorch",
        "matmul peak",
        "fraction of the peak",
        "packed − alone",
    ):
        assert any(what in line for line in lines), what
    # seed 0's parameters packed with another seed equal seed 0's alone to float rounding
    diffs = next(line for line in lines if "packed − alone" in line)
    assert all(float(part.split(" (")[0]) < 1e-4 for part in diffs.split("|")[-2].split(","))


def _small(speed):
    import numpy as np

    from o3srl.data import OfflineDataset

    rng = np.random.default_rng(0)
    n = 400
    obs = rng.normal(size=(n, speed.OBS)).astype(np.float32)
    return OfflineDataset(
        {
            "observations": obs,
            "next_observations": obs,
            "actions": rng.uniform(-1, 1, (n, speed.ACT)),
            "rewards": rng.normal(size=n),
            "costs": np.zeros(n, np.float32),
            "terminals": np.zeros(n, bool),
            "timeouts": np.arange(n) % 100 == 99,
        }
    )
