"""Reports: the safe/best/unsafe marking logic, tables, and a whole report rendered from a fixture results file."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from o3srl.errors import O3SRLError
from o3srl.report import (
    Entry,
    build_table,
    format_entry,
    is_safe,
    load_results,
    make_entry,
    mark_entries,
    mean_std,
    render_table,
    safe_counts,
    write_report,
)

FIXTURE = Path(__file__).parent / "fixtures" / "results_small.jsonl"


def E(reward: float, cost: float, n: int = 3) -> Entry:
    return Entry(reward, 0.0, cost, 0.0, n)


def test_safety_is_the_mean_normalized_cost_at_most_one():
    assert is_safe(1.0) and is_safe(0.0) and not is_safe(1.0001)
    assert not is_safe(float("nan"))
    assert E(0.5, 1.0).safe and not E(0.5, 1.01).safe


def test_mean_std_over_seeds_hand_values():
    assert mean_std([0.5, 0.54]) == pytest.approx((0.52, 0.02))
    e = make_entry([0.9, 0.8], [2.0, 1.8])
    assert (e.reward_mean, e.reward_std, e.cost_mean, e.cost_std, e.n) == pytest.approx((0.85, 0.05, 1.9, 0.1, 2))


def test_best_is_the_highest_reward_among_safe_entries_only():
    marks = mark_entries({"a": E(0.5, 0.9), "b": E(0.9, 1.5), "c": E(0.3, 0.2), "d": None})
    assert marks == {"a": "best", "b": "unsafe", "c": "safe", "d": "missing"}


def test_no_best_when_every_entry_is_unsafe_and_ties_share_best():
    assert mark_entries({"a": E(0.9, 1.1), "b": E(0.2, 3.0)}) == {"a": "unsafe", "b": "unsafe"}
    assert mark_entries({"a": E(0.4, 1.0), "b": E(0.4, 0.1)}) == {"a": "best", "b": "best"}
    assert mark_entries({}) == {}


def test_entry_text():
    e = Entry(0.52, 0.02, 0.85, 0.05, 2)
    assert format_entry(e, "best") == "✓ **0.52 ± 0.02 / 0.85 ± 0.05**"
    assert format_entry(e, "safe") == "✓ 0.52 ± 0.02 / 0.85 ± 0.05"
    assert format_entry(e, "unsafe") == "✗ *0.52 ± 0.02 / 0.85 ± 0.05*"
    assert format_entry(None, "missing") == "—"
    assert format_entry(e, "safe", expected_n=3).endswith("(n=2)")
    assert format_entry(e, "safe", digits=1) == "✓ 0.5 ± 0.0 / 0.8 ± 0.1"


def test_safe_counts_count_tasks_with_an_entry():
    table = {"t1": {"a": E(0.5, 0.9), "b": E(0.9, 1.5)}, "t2": {"a": E(0.5, 1.2)}}
    assert safe_counts(table, ["a", "b", "c"]) == {"a": (1, 2), "b": (0, 1), "c": (0, 0)}


def test_fixture_table_in_the_papers_layout():
    res = load_results(FIXTURE)
    assert res.tasks == ["OfflineBallRun-v0", "OfflineCarRun-v0"]
    assert res.algorithms == ["o3srl", "td3bc-lambda0", "td3bc-lambda5"]
    assert res.cost_limits == [5.0, 10.0]
    # The failed-then-finished cell counts as finished; the torn last line is ignored.
    assert [r["cell_id"] for r in res.failed] == ["OfflineCarRun-v0__td3bc-lambda5__k10__s0"]
    text = render_table(build_table(res.rows, 5.0), res.tasks, res.algorithms, res.labels)
    lines = text.splitlines()
    assert lines[0] == "| task | O3SRL | TD3+BC λ=0 | TD3+BC λ=5 |"
    # BallRun: λ = 0 has the highest reward but is unsafe, so O3SRL (safe) is best.
    assert lines[2] == (
        "| OfflineBallRun-v0 | ✓ **0.52 ± 0.02 / 0.85 ± 0.05** | ✗ *0.85 ± 0.05 / 1.90 ± 0.10* | "
        "✓ 0.30 ± 0.00 / 0.30 ± 0.10 |"
    )
    # CarRun: O3SRL's mean cost 1.1 is unsafe; the fixed λ = 5 agent is the only safe one.
    assert lines[3].startswith("| OfflineCarRun-v0 | ✗ *0.60 ± 0.00 / 1.10 ± 0.10* | ✗ *")
    assert lines[3].endswith("| ✓ **0.42 ± 0.02 / 0.60 ± 0.10** |")
    assert lines[-1] == "| **safe on (tasks)** | 1 / 2 | 0 / 2 | 2 / 2 |"
    k10 = render_table(build_table(res.rows, 10.0), res.tasks, res.algorithms, res.labels).splitlines()
    assert k10[3].endswith("| — |")  # the failed cell has no entry
    assert k10[-1] == "| **safe on (tasks)** | 2 / 2 | 1 / 2 | 1 / 1 |"
    assert k10[-2].startswith("| *mean over tasks* |") and k10[-2].endswith(" (1 / 2 tasks) |")
    assert "tasks)" not in lines[-2]  # every algorithm has every task at κ = 5


def test_report_renders_markdown_and_plots(tmp_path):
    md = write_report(FIXTURE, tmp_path / "docs" / "small", reps=50)
    assert md == tmp_path / "docs" / "small.md"
    text = md.read_text()
    assert "DSRL's reference scores" in text
    assert "### κ = 5" in text and "### κ = 10" in text
    assert "| **safe on (tasks)** | 1 / 2 | 0 / 2 | 2 / 2 |" in text
    assert "## Aggregate statistics" in text and "IQM normalized reward" in text and "safe rate" in text
    # the aggregate names the tasks it covers: only those where every algorithm has run
    assert "**κ = 5** (2 tasks × 2 seeds: OfflineBallRun-v0, OfflineCarRun-v0;" in text
    assert "**κ = 10** (1 task × 2 seeds: OfflineBallRun-v0;" in text
    assert "FloatingPointError: the critic diverged" in text
    assert "no training curves" in text and "No O3SRL run directories" in text
    # κ-response: raw episode reward / cost against κ, means over the seeds by hand (O3SRL, BallRun:
    # (676.87 + 728.91) / 2 = 702.9 at cost (4 + 4.5) / 2; (937.08 + 885.04) / 2 = 911.1 at cost 8), unsafe marked
    assert "## Response to the cost limit" in text
    assert "| O3SRL | 702.9 / 4.2 | 911.1 / 8.0 |" in text
    assert "| TD3+BC λ=0 | ✗ 1132.2 / 9.5 | 1158.3 / 9.5 |" in text
    assert "| R*_data(κ) | 796.4 | 796.4 |" in text
    for name in ("tradeoff_k5.png", "tradeoff_k10.png", "kappa_response_OfflineBallRun-v0.png"):
        png = tmp_path / "docs" / "small" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(small/{name})" in text


def test_report_without_rliable_says_so(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "rliable", None)
    text = write_report(FIXTURE, tmp_path / "r", reps=10).read_text()
    assert "rliable is not installed" in text and "o3srl[stats]" in text


def test_bad_results_files_fail_cleanly(tmp_path):
    with pytest.raises(O3SRLError, match="does not exist"):
        write_report(tmp_path / "missing.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"cell_id": "x", "status": "failed"}\n')
    with pytest.raises(O3SRLError, match="no finished cells"):
        write_report(empty, tmp_path / "out")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('not json\n{"a": 1}\n')
    with pytest.raises(O3SRLError, match="line 1"):
        write_report(bad, tmp_path / "out")
    assert not (tmp_path / "out.md").exists()


def test_report_cli(tmp_path, capsys):
    from o3srl.cli import main

    assert main(["report", str(FIXTURE), "--out", str(tmp_path / "x"), "--reps", "20"]) == 0
    assert (tmp_path / "x.md").exists()
    assert main(["report", str(tmp_path / "nope.jsonl")]) == 2
    assert "error:" in capsys.readouterr().err


def test_show_markdown_table_prints_and_writes_the_same_table(tmp_path, capsys):
    from o3srl.report import show_markdown_table

    table = show_markdown_table(("run", "cost"), [("a", "1.0"), ("b", "2.5")], tmp_path / "t.md")
    assert table == "| run | cost |\n|---|---|\n| a | 1.0 |\n| b | 2.5 |"
    assert capsys.readouterr().out == table + "\n"
    assert (tmp_path / "t.md").read_text() == table + "\n"
