"""The run directory: the one place that knows its file names, reads a run back and evaluates its saved policy.

Layout (written by :func:`o3srl.train.run`)::

    config.json          the resolved config
    run.json             dataset path and hash, reference scores, budget, package version
    metrics.jsonl        one row per ``log_every`` steps (and evaluation rows)
    rounds.npz           every round's λ-player record (:class:`RoundTrace`)
    checkpoint.msgpack   everything needed to continue
    policy.msgpack       the final policy (what ``o3srl.load_policy`` reads)
    eval.json            the final evaluation
    bandit.png           arm probabilities and λ over training (O3SRL)
    tb/                  TensorBoard events (``--tensorboard``)

Training, ``o3srl eval``, ``o3srl bench`` and ``o3srl report`` all go through these names and readers; the
evaluation of a run (:func:`evaluate_policy`, :func:`evaluate_run`) and its summary (:func:`run_summary`) are
written once, here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from o3srl.errors import O3SRLError
from o3srl.io import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable

    from o3srl.config import TrainConfig
    from o3srl.evaluate import EvalResult

CONFIG_NAME = "config.json"
RUN_INFO_NAME = "run.json"
METRICS_NAME = "metrics.jsonl"
TRACE_NAME = "rounds.npz"
CHECKPOINT_NAME = "checkpoint.msgpack"
POLICY_NAME = "policy.msgpack"
EVAL_NAME = "eval.json"
OUTPUT_NAME = "output.json"
"""What a run's output is made of, when it is chosen at the end (the adaptive O3SRL's ``best`` tail members)."""
BANDIT_PLOT_NAME = "bandit.png"
TENSORBOARD_DIR = "tb"

LOG_NAMES = (METRICS_NAME, TRACE_NAME)
"""The files a run appends to as it trains (truncated to the checkpoint on resume)."""

REFERENCES = ("dsrl", "given", "dataset")
"""Where a run's reference scores come from (``run.json``'s ``reward_reference``)."""


# ---------------------------------------------------------------------------------------------------- JSON files
def read_json_object(path: Path, what: str, hint: str = "") -> dict[str, Any]:
    """A JSON file that must hold an object; a file that cannot be read or parsed, or holds anything else, is one
    :class:`O3SRLError` starting with ``what`` (``hint`` follows the reason of an unreadable file)."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise O3SRLError(f"{what} cannot be read ({exc}){hint}") from None
    if not isinstance(info, dict):
        raise O3SRLError(f"{what} is not a JSON object")
    return info


def json_default(value: Any) -> Any:
    """numpy scalars and arrays as plain JSON numbers and lists, paths as strings (``json.dumps(default=…)``)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def write_run_files(run_dir: Path, config_json: str, info: dict[str, Any]) -> None:
    """``config.json`` (the resolved config, as :func:`o3srl.config.dumps` wrote it) and ``run.json``."""
    atomic_write_text(run_dir / CONFIG_NAME, config_json + "\n")
    atomic_write_text(run_dir / RUN_INFO_NAME, json.dumps(info, indent=2) + "\n")


def write_eval(run_dir: Path, summary: dict[str, Any]) -> Path:
    """``eval.json``: the summary of the run's final evaluation."""
    return atomic_write_text(run_dir / EVAL_NAME, json.dumps(summary, indent=2, default=json_default) + "\n")


def write_output_info(run_dir: Path, output: dict[str, Any]) -> Path:
    """``output.json``: how the saved policy was chosen (written with it; every summary of the run repeats it)."""
    return atomic_write_text(run_dir / OUTPUT_NAME, json.dumps(output, indent=2, default=json_default) + "\n")


def read_output_info(run_dir: Path) -> dict[str, Any]:
    """A run's ``output.json`` ({} when it has none)."""
    path = run_dir / OUTPUT_NAME
    if not path.exists():
        return {}
    return read_json_object(path, f"{path}", "; it is written with the run's policy by 'o3srl train'")


def read_run_info(run_dir: Path) -> dict[str, Any]:
    """A run's ``run.json``, with the fields evaluation reads checked; problems are one :class:`O3SRLError`."""
    path = run_dir / RUN_INFO_NAME
    info = read_json_object(path, f"{path}", "; it should hold the run's record as written by 'o3srl train'")
    env = info.get("env_id")
    if not isinstance(env, str) or not env:
        raise O3SRLError(f"{path}: env_id must be a non-empty string, got {env!r}")
    rr = info.get("reward_range")
    if (
        not isinstance(rr, list)
        or len(rr) != 2
        or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in rr)
        or rr[1] <= rr[0]
    ):
        raise O3SRLError(f"{path}: reward_range must be two finite numbers [min, max] with max > min, got {rr!r}")
    if info.get("reward_reference") not in REFERENCES:
        raise O3SRLError(
            f"{path}: reward_reference must be 'dsrl', 'given' or 'dataset', got {info.get('reward_reference')!r}"
        )
    return info


def read_run(run_dir: str | Path) -> tuple[TrainConfig, dict[str, Any]]:
    """A finished or running run's config and ``run.json`` record (checked); one :class:`O3SRLError` otherwise."""
    from o3srl.config import read_config

    path = Path(run_dir)
    if not (path / CONFIG_NAME).exists() or not (path / RUN_INFO_NAME).exists():
        raise O3SRLError(f"{run_dir} is not a run directory ({CONFIG_NAME} / {RUN_INFO_NAME} missing)")
    return read_config(path / CONFIG_NAME), read_run_info(path)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl`` up to the first unreadable one (a run killed mid-write); none when the
    file is absent."""
    path = run_dir / METRICS_NAME
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows


# ---------------------------------------------------------------------------------------------------- checkpoint
def checkpoint_step(run_dir: Path) -> int | None:
    """The step of the run's checkpoint; ``None`` when it has none. An unreadable checkpoint raises
    :class:`~o3srl.checkpoint.CheckpointError`."""
    from o3srl.checkpoint import CheckpointError, read_payload

    path = run_dir / CHECKPOINT_NAME
    if not path.exists():
        return None
    try:
        return int(read_payload(path)["step"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} holds no step ({exc})") from None


def trained_step(run_dir: Path) -> int | None:
    """The step the run's training reached: its checkpoint's, or, where the checkpoint was left behind, the step of
    the summary (``eval.json``) written with its final policy. A checkpoint is needed only to resume, so a finished
    run copied to another machine for evaluation can travel without it (it is the largest file of a run). ``None``
    without either; an unreadable checkpoint raises :class:`~o3srl.checkpoint.CheckpointError`."""
    step = checkpoint_step(run_dir)
    if step is not None or not has_policy(run_dir):
        return step
    try:
        recorded = json.loads((run_dir / EVAL_NAME).read_text()).get("step")
    except (OSError, ValueError, AttributeError):
        return None
    return recorded if isinstance(recorded, int) and not isinstance(recorded, bool) else None


def has_checkpoint(run_dir: Path) -> bool:
    return (run_dir / CHECKPOINT_NAME).exists()


def has_policy(run_dir: Path) -> bool:
    return (run_dir / POLICY_NAME).exists()


def clear_logs(run_dir: Path) -> None:
    """Remove the logs of an attempt killed before its first checkpoint, so that a fresh start begins clean."""
    for name in LOG_NAMES:
        (run_dir / name).unlink(missing_ok=True)


def checkpoint_differences(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """``field: saved in the checkpoint, current in config.json`` for every field (nested sections dotted) where
    two configs in their dict form differ."""
    out: list[str] = []
    for key in sorted(set(saved) | set(current)):
        x, y = saved.get(key), current.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += checkpoint_differences(x, y, f"{prefix}{key}.")
        elif x != y:
            out.append(f"{prefix}{key}: {json.dumps(x)} in the checkpoint, {json.dumps(y)} in config.json")
    return out


def check_policy_config(run_dir: Path, cfg: TrainConfig) -> None:
    """The policy file carries the config it was trained with; a ``config.json`` edited since is refused."""
    from o3srl.checkpoint import read_payload
    from o3srl.config import from_dict, to_dict

    saved = from_dict(json.loads(read_payload(run_dir / POLICY_NAME)["config"]))
    differ = checkpoint_differences(to_dict(saved), to_dict(cfg))
    if differ:
        text = "; ".join(d.replace("in the checkpoint", "in the policy") for d in differ[:4])
        raise O3SRLError(
            f"{run_dir}: config.json differs from the config saved with its policy ({text}); restore config.json"
        )


# ---------------------------------------------------------------------------------------------------- round trace
def read_trace(path: Path) -> dict[str, np.ndarray] | None:
    """The columns of a ``rounds.npz`` under their metric names (``bandit/lambda``, …); ``None`` when absent."""
    if not path.exists():
        return None
    with np.load(path) as f:
        return {_metric_name(k): f[k] for k in f.files}


def _file_key(metric: str) -> str:
    return metric.replace("/", "__")  # npz keys cannot hold "/"


def _metric_name(key: str) -> str:
    return key.replace("__", "/")


class RoundTrace:
    """Every round's λ-player record (λ, pulled arm, its loss, arm probabilities, the critics' cost estimate).

    Kept per round in ``rounds.npz`` (metrics.jsonl holds per-window summaries); saved with each checkpoint and
    truncated to the checkpoint on resume, so a resumed run's trace equals an uninterrupted one's.
    """

    PREFIXES = ("bandit/", "feedback/", "theory/")

    def __init__(self, columns: dict[str, list[np.ndarray]]) -> None:
        self.columns = columns

    @classmethod
    def load(cls, path: Path, rounds: int) -> RoundTrace:
        if rounds == 0 or not path.exists():
            return cls({})
        with np.load(path) as f:
            return cls({_metric_name(k): [f[k][:rounds]] for k in f.files})

    def extend(self, step: int, steps_per_round: int, metrics: dict[str, Any]) -> None:
        n = len(next(iter(metrics.values())))
        end = step // steps_per_round
        self.columns.setdefault("round", []).append(np.arange(end - n + 1, end + 1))
        for key, values in metrics.items():
            if key.startswith(self.PREFIXES):
                self.columns.setdefault(key, []).append(np.asarray(values, np.float32))

    def save(self, path: Path) -> None:
        import io

        buf = io.BytesIO()
        columns = {_file_key(k): np.concatenate(v) for k, v in self.columns.items()}
        np.savez_compressed(buf, **columns)  # type: ignore[arg-type]  # numpy's stub types **kwds as its flags
        atomic_write_bytes(path, buf.getvalue())


# ---------------------------------------------------------------------------------------------------- evaluation
def evaluate_policy(
    policy: Callable[[np.ndarray], np.ndarray],
    info: dict[str, Any],
    cfg: TrainConfig,
    *,
    episodes: int,
    seed: int,
    envs: int,
    cost_limit: float | None = None,
    env_id: str | None = None,
) -> EvalResult:
    """Roll out ``policy`` of the run recorded by ``info`` (its ``run.json``) and ``cfg``, scored with the run's
    reference scores at ``cost_limit`` (default: the run's κ; the data's safe frontier applies at the run's κ only),
    on ``env_id`` (default: the run's environment)."""
    from o3srl.evaluate import evaluate

    kappa = cfg.cost_limit if cost_limit is None else cost_limit
    frontier = info.get("safe_frontier") if kappa == cfg.cost_limit else None
    if not isinstance(frontier, (int, float)) or not math.isfinite(frontier):
        frontier = None
    return evaluate(
        policy,
        env_id or info["env_id"],
        episodes=episodes,
        cost_limit=kappa,
        seed=seed,
        num_envs=envs,
        reward_range=tuple(info["reward_range"]),
        reference=info["reward_reference"],
        frontier=frontier,
    )


def run_summary(
    run_dir: Path,
    cfg: TrainConfig,
    info: dict[str, Any],
    *,
    step: int | None = None,
    result: EvalResult | None = None,
    cost_limit: float | None = None,
) -> dict[str, Any]:
    """The summary of a run (what ``eval.json`` holds and ``o3srl train`` / ``o3srl eval`` print): who it is, its
    ``run.json`` record and, when evaluated, the evaluation's metrics and episodes."""
    summary: dict[str, Any] = {"run_dir": str(run_dir)}
    if step is not None:
        summary["step"] = step
    summary.update(
        algo=cfg.algo,
        task=cfg.task,
        cost_limit=cfg.cost_limit if cost_limit is None else cost_limit,
        seed=cfg.seed,
        **info,
    )
    if result is not None:
        summary.update(result.metrics())
        summary["eval"] = result.to_dict()
    return summary


def evaluate_run(
    run_dir: str | Path,
    *,
    episodes: int,
    seed: int,
    envs: int,
    cost_limit: float | None = None,
    env_id: str | None = None,
    step: int | None = None,
) -> tuple[EvalResult, dict[str, Any]]:
    """Evaluate the policy saved in ``run_dir`` (see :func:`evaluate_policy`); returns the result and the run's
    summary (:func:`run_summary`). A module:Class entry point recorded in the run is imported only when ``env_id``
    names it too, so a run directory from elsewhere cannot run code; a ``config.json`` edited since the policy was
    saved is refused."""
    from o3srl.envs.make import check_entry_point
    from o3srl.policy import load_policy

    path = Path(run_dir)
    cfg, info = read_run(path)
    if env_id is None:
        check_entry_point(info["env_id"], None, str(path / RUN_INFO_NAME))
    policy = load_policy(path)
    check_policy_config(path, cfg)
    conditioned = {}
    if cost_limit is not None and cost_limit != cfg.cost_limit:
        conditioned = condition_on_cost_limit(policy, cfg, info, cost_limit)
    result = evaluate_policy(
        policy, info, cfg, episodes=episodes, seed=seed, envs=envs, cost_limit=cost_limit, env_id=env_id
    )
    info = {**info, **read_output_info(path), **conditioned}
    summary = run_summary(path, cfg, info, step=step, result=result, cost_limit=cost_limit)
    return result, summary


def condition_on_cost_limit(policy: Any, cfg: TrainConfig, info: dict[str, Any], cost_limit: float) -> dict[str, Any]:
    """Set a policy that reads κ while it acts to ``cost_limit`` (in place); returns what the summary records.

    CAPS switches its heads by the budget left of κ, CCAC asks its actor for the budget left of κ, and CDT starts
    its episodes at the targets (R̂_0, κ): all three are trained once and take a new κ at evaluation, as their papers
    evaluate them. CDT's R̂_0 follows the source the run took it from (OSRL's table for the task, the data's safe
    frontier R*_data(κ), or a given value, kept). Every other learner's policy was trained for its κ and is only
    scored against the new one."""
    from o3srl.policy import CostTrackingPolicy, SequencePolicy

    if isinstance(policy, CostTrackingPolicy):
        policy.cost_limit = float(cost_limit)
        return {f"{cfg.algo}_cost_limit": float(cost_limit)}
    if isinstance(policy, SequencePolicy):
        from o3srl.algos.cdt import target_reward

        source = info.get("cdt_target_reward_source")
        if source == "given" or cfg.cdt.target_return is not None:
            reward, source = float(policy.targets[0]), "given"
        else:
            from o3srl.data.dataset import OfflineDataset

            dataset = str(info.get("dataset") or cfg.dataset)
            try:
                episodes = OfflineDataset.load(dataset).episodes
            except (OSError, O3SRLError) as exc:
                raise O3SRLError(
                    f"cannot set CDT's target reward for κ = {cost_limit:g}: the run's dataset {dataset} is not "
                    f"readable ({exc}); give --cdt.target-return when training, or evaluate at the run's κ"
                ) from None
            reward, source = target_reward(cfg.cdt, cfg.task, cost_limit, episodes.reward_return, episodes.cost_return)
        policy.targets = (reward, float(cost_limit))
        return {
            "cdt_target_reward": reward,
            "cdt_target_reward_source": source,
            "cdt_target_cost": float(cost_limit),
        }
    return {}
