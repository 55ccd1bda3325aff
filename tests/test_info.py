"""`o3srl data info`: the summary's numbers against hand-computed values, the command, and its errors."""

from __future__ import annotations

import json

import pytest

from o3srl.cli import main
from o3srl.data import OfflineDataset
from o3srl.data.info import summarize


def test_summary_hand_computed(arrays):
    # Episodes (lengths 3, 2, 4): reward returns 6, 20, 2; cost returns 1, 10, 0.
    s = summarize(OfflineDataset(arrays), cost_limits=(0, 5, 10))
    assert (s["episodes"], s["transitions"], s["episodes_ending_in_terminal"]) == (3, 9, 1)
    assert s["reward_return"]["min"] == 2 and s["reward_return"]["max"] == 20 and s["reward_return"]["median"] == 6
    assert s["cost_return"]["mean"] == pytest.approx(11 / 3)
    assert s["episode_length"]["max"] == 4
    assert s["cost_limits"]["0"] == {"fraction_within": pytest.approx(1 / 3), "safe_frontier": 2.0}
    assert s["cost_limits"]["5"] == {"fraction_within": pytest.approx(2 / 3), "safe_frontier": 6.0}
    assert s["cost_limits"]["10"] == {"fraction_within": 1.0, "safe_frontier": 20.0}


def test_no_episode_within_the_limit_has_no_frontier(arrays):
    arrays = dict(arrays, costs=arrays["costs"] + 1.0)
    s = summarize(OfflineDataset(arrays), cost_limits=(0,))
    assert s["cost_limits"]["0"] == {"fraction_within": 0.0, "safe_frontier": None}


def test_info_command_prints_and_plots(arrays, tmp_path, capsys):
    path = OfflineDataset(arrays).save(tmp_path / "d.hdf5")
    png = tmp_path / "scatter.png"
    assert main(["data", "info", str(path), "--plot", str(png), "--json-out"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["episodes"] == 3 and out["cost_limits"]["5"]["safe_frontier"] == 6.0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["data", "info", str(path)]) == 0
    assert "safe frontier" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.hdf5"], "does not exist"),
        (["{file}", "--plot", "out.jpg"], "PNG"),
        (["{file}", "--cost-limits", "-1"], "--cost-limits (each) must be a finite number ≥ 0"),
    ],
)
def test_info_bad_input_is_one_clear_error(arrays, tmp_path, capsys, args, message):
    path = OfflineDataset(arrays).save(tmp_path / "d.hdf5")
    argv = ["data", "info", *(a.format(file=path) for a in args)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and "Traceback" not in err
    assert not (tmp_path / "out.jpg").exists()
