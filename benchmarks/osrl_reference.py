"""OSRL's own implementations (``osrl-lib``, PyTorch) trained on this project's dataset files and scored by o3srl's
evaluator: the reference side of ``docs/results/baselines_validation.md``.

One command trains one (algorithm, task, κ, seed, steps) cell with OSRL's model and trainer classes, as OSRL's
``examples/train/train_<algo>.py`` drives them, and appends one JSON row to a results file (resumable: a cell whose
row is there is skipped); the torch state dict goes to ``<out-dir>/<cell id>/model.pt`` in OSRL's checkpoint format
(``{"model_state": ...}``). ``grid`` runs every cell of an o3srl grid file (the same tasks, κ, seeds, steps,
dataset files and evaluation settings as ``o3srl bench`` uses for our side). ``check-configs`` compares the defaults
transcribed below with OSRL's ``examples/configs/*_configs.py`` in a checkout of its repository.

It runs in its own virtual environment, not the project's (torch, and osrl-lib's pins, which do not install on
Python 3.11)::

    python3.11 -m venv .venv-osrl
    .venv-osrl/bin/pip install --upgrade pip
    .venv-osrl/bin/pip install -r benchmarks/osrl_requirements.txt   # torch==2.13.0 (the CPU wheel), numpy, ...
    .venv-osrl/bin/pip install -e .                                  # o3srl: its loader, environments, evaluator
    .venv-osrl/bin/pip install --no-deps osrl-lib==0.1.0             # OSRL itself, without its pins

osrl-lib 0.1.0 requires ``torch~=1.13.0`` (on Python 3.11: torch 1.13.1's 887 MB CUDA wheel), ``scipy~=1.10.1``,
``protobuf~=3.19.0``, ``wandb~=0.14.0`` (which needs ``pathtools``, an sdist only: ``pip install osrl-lib`` with
``--only-binary :all:`` ends in ResolutionImpossible), ``dsrl`` and ``fast-safe-rl`` (which pull in MuJoCo,
MetaDrive and tianshou).
None of that is needed for training: the algorithm modules import only torch, numpy, scipy, tqdm, pyyaml, gymnasium
and ``fsrl.utils`` (for its loggers), which is replaced here by a stub before ``osrl`` is imported. Its
``osrl.common.dataset`` prints "OApackage is not installed, can not use CDT." on import; CDT is not run here.

Usage (from the repository root)::

    .venv-osrl/bin/python benchmarks/osrl_reference.py train --algo bcq-lag --task OfflineBallRun-v0 \\
        --cost-limit 5 --seed 0 --steps 100000
    .venv-osrl/bin/python benchmarks/osrl_reference.py grid benchmarks/grids/baselines_validation.toml
    .venv-osrl/bin/python benchmarks/osrl_reference.py check-configs --osrl-repo PATH/TO/OSRL

What is OSRL's and what is ours, per cell:

- **Data**: the HDF5 file is read with o3srl's loader (``o3srl.data.OfflineDataset``), so both sides see the same
  arrays, then handed to OSRL as ``env.get_dataset()`` would: a dict of the seven arrays, floats as float32.
  ``train_<algo>.py`` then calls DSRL's ``env.pre_process_data`` with the configs' defaults (no outliers, noise,
  inpainting or ε filter, ``density = 1.0``: no density filter, no Pareto augmentation); with those it only drops
  transitions after the last episode boundary, and o3srl's loader refuses files that have any, so it is the
  identity here and is not called (DSRL is not installed). BC-All and BC-Safe go through OSRL's
  ``process_bc_dataset(data, κ, γ = 1, bc_mode)``: BC-Safe keeps the episodes whose undiscounted cost return is
  ≤ κ. The other algorithms read OSRL's ``TransitionDataset(data, reward_scale = 0.1, cost_scale = 1)``
  (COptiDICE with ``state_init = True``), whose ``done`` is ``terminals | timeouts``, batched by a torch
  ``DataLoader`` of 512. Observations stay raw, as OSRL's scripts leave them (``wrap_env`` with mean 0, std 1);
  our algorithms normalise them with the data's statistics.
- **Training**: OSRL's model and trainer classes, built with the values of OSRL's ``examples/configs`` for the task
  (transcribed in ``OSRL_CONFIGS``; the Bullet tasks' classes differ only in the episode length), the cell's κ as
  ``cost_limit`` (so OSRL's own ``qc_thres`` follows from it) and ``--steps`` calls of ``trainer.train_one_step``.
  No wandb, no logger (a stub keeps the last value of each training statistic for the row), no periodic evaluation
  and no best-checkpoint selection: the final iterate is evaluated.
- **Evaluation**: o3srl's ``o3srl.evaluate.evaluate`` on o3srl's task environment, with the grid's episodes, seeds
  (``eval_seed + i`` for episode i) and DSRL reference scores, as our rows are scored. The policy is OSRL's
  ``model.act`` on one raw observation at a time, as OSRL's ``rollout`` calls it: deterministic (``tanh`` of the
  mean) for BEAR-Lag, CPQ and COptiDICE, the MLP for BC; for BCQ-Lag, OSRL's ``act`` draws a fresh VAE latent z
  for every action (clipped N(0, 1)), so its evaluated policy is stochastic (``--bcql-eval osrl``, the default;
  torch's generator is seeded with the evaluation seed first). ``--bcql-eval mode`` sets z = 0 instead, as our
  BCQ-Lag's saved policy does.
- **Threads and data workers**: OSRL's scripts use 4 torch threads and 8 ``DataLoader`` workers; here
  ``--threads`` (default 1, as every o3srl bench cell is one single-threaded process) and ``--num-workers``
  (default 0). The minibatches are the same i.i.d. uniform draws either way; only which random numbers make them
  differs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import fcntl
import hashlib
import importlib
import json
import os
import platform
import socket
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

# o3srl's algorithm name → OSRL's algorithm module and, for BC, its bc_mode.
ALGOS: dict[str, tuple[str, str | None]] = {
    "bc-all": ("bc", "all"),
    "bc-safe": ("bc", "safe"),
    "bcq-lag": ("bcql", None),
    "bear-lag": ("bearl", None),
    "cpq": ("cpq", None),
    "coptidice": ("coptidice", None),
}

# OSRL's examples/configs/<algo>_configs.py (GitHub liuzuxin/OSRL at 03a4586, the code osrl-lib 0.1.0 ships), the
# fields that reach the model, the trainer or the data. Every Bullet task's class changes only `task` and
# `episode_len` (EPISODE_LEN); `update_steps` and `cost_limit` are replaced by the cell's steps and κ.
OSRL_CONFIGS: dict[str, dict[str, Any]] = {
    "bc": {
        "actor_lr": 0.001,
        "cost_limit": 10,
        "batch_size": 512,
        "update_steps": 100_000,
        "num_workers": 8,
        "threads": 4,
        "a_hidden_sizes": [256, 256],
        "gamma": 1.0,
        "density": 1.0,
    },
    "bcql": {
        "reward_scale": 0.1,
        "cost_scale": 1,
        "actor_lr": 0.001,
        "critic_lr": 0.001,
        "vae_lr": 0.001,
        "phi": 0.05,
        "lmbda": 0.75,
        "beta": 0.5,
        "cost_limit": 10,
        "batch_size": 512,
        "update_steps": 100_000,
        "num_workers": 8,
        "threads": 4,
        "a_hidden_sizes": [256, 256],
        "c_hidden_sizes": [256, 256],
        "vae_hidden_sizes": 400,
        "sample_action_num": 10,
        "gamma": 0.99,
        "tau": 0.005,
        "num_q": 2,
        "num_qc": 2,
        "PID": [0.1, 0.003, 0.001],
        "density": 1.0,
    },
    "bearl": {
        "reward_scale": 0.1,
        "cost_scale": 1,
        "actor_lr": 0.001,
        "critic_lr": 0.001,
        "vae_lr": 0.001,
        "cost_limit": 10,
        "batch_size": 512,
        "update_steps": 300_000,
        "num_workers": 8,
        "threads": 4,
        "a_hidden_sizes": [256, 256],
        "c_hidden_sizes": [256, 256],
        "vae_hidden_sizes": 400,
        "sample_action_num": 10,
        "gamma": 0.99,
        "tau": 0.005,
        "beta": 0.5,
        "lmbda": 0.75,
        "mmd_sigma": 50,
        "target_mmd_thresh": 0.05,
        "start_update_policy_step": 0,
        "num_q": 2,
        "num_qc": 2,
        "PID": [0.1, 0.003, 0.001],
        "density": 1.0,
    },
    "cpq": {
        "reward_scale": 0.1,
        "cost_scale": 1,
        "actor_lr": 0.0001,
        "critic_lr": 0.001,
        "alpha_lr": 0.0001,
        "vae_lr": 0.001,
        "cost_limit": 10,
        "batch_size": 512,
        "update_steps": 100_000,
        "num_workers": 8,
        "threads": 4,
        "a_hidden_sizes": [256, 256],
        "c_hidden_sizes": [256, 256],
        "vae_hidden_sizes": 400,
        "sample_action_num": 10,
        "gamma": 0.99,
        "tau": 0.005,
        "beta": 0.5,
        "num_q": 2,
        "num_qc": 2,
        "qc_scalar": 1.5,
        "density": 1.0,
    },
    "coptidice": {
        "reward_scale": 0.1,
        "cost_scale": 1,
        "actor_lr": 0.0001,
        "critic_lr": 0.0001,
        "scalar_lr": 0.0001,
        "cost_limit": 10,
        "batch_size": 512,
        "update_steps": 100_000,
        "num_workers": 8,
        "threads": 4,
        "a_hidden_sizes": [256, 256],
        "c_hidden_sizes": [256, 256],
        "alpha": 0.5,
        "gamma": 0.99,
        "cost_ub_epsilon": 0.01,
        "f_type": "softchi",
        "num_nu": 2,
        "num_chi": 2,
        "density": 1.0,
    },
}
CONFIG_MODULES = {
    "bc": ("examples.configs.bc_configs", "BC_DEFAULT_CONFIG"),
    "bcql": ("examples.configs.bcql_configs", "BCQL_DEFAULT_CONFIG"),
    "bearl": ("examples.configs.bearl_configs", "BEARL_DEFAULT_CONFIG"),
    "cpq": ("examples.configs.cpq_configs", "CPQ_DEFAULT_CONFIG"),
    "coptidice": ("examples.configs.coptidice_configs", "COptiDICE_DEFAULT_CONFIG"),
}
EPISODE_LEN = {
    "OfflineAntCircle-v0": 500,
    "OfflineAntRun-v0": 200,
    "OfflineBallCircle-v0": 200,
    "OfflineBallRun-v0": 100,
    "OfflineCarCircle-v0": 300,
    "OfflineCarRun-v0": 200,
    "OfflineDroneCircle-v0": 300,
    "OfflineDroneRun-v0": 200,
}
# OSRL's dataset-perturbation fields, all None by default (pre_process_data is then the identity, see above).
UNUSED_DATA_FIELDS = ("outliers_percent", "noise_scale", "inpaint_ranges", "epsilon")

DEFAULT_RESULTS = "results/baselines_validation_osrl.jsonl"
DEFAULT_OUT_DIR = "runs/osrl_reference"


# ------------------------------------------------------------------------------------------------ OSRL's imports
class _Logger:
    """Stands in for fsrl's WandbLogger / DummyLogger: the trainers only call ``store``; the last value of each
    statistic is kept for the results row."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.last: dict[str, float] = {}

    def store(self, tab: str | None = None, **kwargs: Any) -> None:
        for k, v in kwargs.items():
            with contextlib.suppress(TypeError, ValueError):
                self.last[k] = float(v)

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None


def import_osrl() -> types.ModuleType:
    """Import ``osrl.algorithms`` with ``fsrl.utils`` stubbed (fast-safe-rl is not installed)."""
    fsrl = types.ModuleType("fsrl")
    utils = types.ModuleType("fsrl.utils")
    utils.DummyLogger = _Logger  # type: ignore[attr-defined]
    utils.WandbLogger = _Logger  # type: ignore[attr-defined]
    fsrl.utils = utils  # type: ignore[attr-defined]
    sys.modules["fsrl"] = fsrl
    sys.modules["fsrl.utils"] = utils
    return importlib.import_module("osrl.algorithms")


def osrl_config(algo: str, task: str, cost_limit: float, seed: int, steps: int) -> dict[str, Any]:
    """OSRL's default config for ``algo`` on ``task``, with the cell's κ, seed and steps."""
    module, bc_mode = ALGOS[algo]
    if task not in EPISODE_LEN:
        raise SystemExit(f"no OSRL config for {task}: OSRL's Bullet configs cover {', '.join(EPISODE_LEN)}")
    cfg = dict(OSRL_CONFIGS[module])
    cfg.update(task=task, episode_len=EPISODE_LEN[task], cost_limit=cost_limit, seed=seed, update_steps=steps)
    if bc_mode is not None:
        cfg["bc_mode"] = bc_mode
    return cfg


# ------------------------------------------------------------------------------------------------ one cell
def cell_id(task: str, algo: str, cost_limit: float, seed: int) -> str:
    return f"{task}__{algo}__k{cost_limit:g}__s{seed}"


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def load_data(path: str, task: str) -> tuple[dict[str, np.ndarray], Any]:
    """The dataset as OSRL's ``env.get_dataset()`` returns it, read by o3srl's loader; and o3srl's dataset."""
    from o3srl.data.dataset import KEYS, OfflineDataset
    from o3srl.envs.registry import get_task

    ds = OfflineDataset.load(path)
    spec = get_task(task)
    if (ds.obs_dim, ds.act_dim) != (spec.obs_dim, spec.act_dim):
        raise SystemExit(
            f"{path}: obs/act dims {ds.obs_dim}/{ds.act_dim}, but {task} has {spec.obs_dim}/{spec.act_dim}"
        )
    if spec.max_episode_steps != EPISODE_LEN[task]:
        raise SystemExit(f"{task}: OSRL's episode_len {EPISODE_LEN[task]} ≠ the task's {spec.max_episode_steps}")
    data = {k: np.array(ds[k]) for k in KEYS}  # copies: OSRL's processing writes into the dict's arrays
    for k in ("observations", "next_observations", "actions", "rewards", "costs"):
        data[k] = data[k].astype(np.float32)
    return data, ds


def build(algo: str, cfg: dict[str, Any], data: dict[str, np.ndarray], max_action: float, num_workers: int) -> tuple:
    """OSRL's model, trainer and minibatch iterator for ``algo``, as ``examples/train/train_<algo>.py`` builds them
    (after ``seed_all``); the trainer's ``env`` is unused here (OSRL uses it only in ``evaluate``)."""
    from torch.utils.data import DataLoader

    A = import_osrl()
    from osrl.common import TransitionDataset
    from osrl.common.dataset import process_bc_dataset

    module, _ = ALGOS[algo]
    state_dim = data["observations"].shape[1]
    action_dim = data["actions"].shape[1]
    device = cfg["device"]
    common = {"state_dim": state_dim, "action_dim": action_dim, "max_action": max_action, "device": device}
    logger = _Logger()
    info: dict[str, Any] = {"transitions": int(data["observations"].shape[0])}
    if module == "bc":
        process_bc_dataset(data, cfg["cost_limit"], cfg["gamma"], cfg["bc_mode"])
        info["transitions"] = int(data["observations"].shape[0])
        model = A.BC(a_hidden_sizes=cfg["a_hidden_sizes"], episode_len=cfg["episode_len"], **common)
        trainer = A.BCTrainer(
            model,
            None,
            logger=logger,
            actor_lr=cfg["actor_lr"],
            bc_mode=cfg["bc_mode"],
            cost_limit=cfg["cost_limit"],
            device=device,
        )
        dataset = TransitionDataset(data)
    elif module == "bcql":
        model = A.BCQL(
            a_hidden_sizes=cfg["a_hidden_sizes"],
            c_hidden_sizes=cfg["c_hidden_sizes"],
            vae_hidden_sizes=cfg["vae_hidden_sizes"],
            sample_action_num=cfg["sample_action_num"],
            PID=cfg["PID"],
            gamma=cfg["gamma"],
            tau=cfg["tau"],
            lmbda=cfg["lmbda"],
            beta=cfg["beta"],
            phi=cfg["phi"],
            num_q=cfg["num_q"],
            num_qc=cfg["num_qc"],
            cost_limit=cfg["cost_limit"],
            episode_len=cfg["episode_len"],
            **common,
        )
        trainer = A.BCQLTrainer(
            model,
            None,
            logger=logger,
            actor_lr=cfg["actor_lr"],
            critic_lr=cfg["critic_lr"],
            vae_lr=cfg["vae_lr"],
            reward_scale=cfg["reward_scale"],
            cost_scale=cfg["cost_scale"],
            device=device,
        )
        dataset = TransitionDataset(data, reward_scale=cfg["reward_scale"], cost_scale=cfg["cost_scale"])
    elif module == "bearl":
        model = A.BEARL(
            a_hidden_sizes=cfg["a_hidden_sizes"],
            c_hidden_sizes=cfg["c_hidden_sizes"],
            vae_hidden_sizes=cfg["vae_hidden_sizes"],
            sample_action_num=cfg["sample_action_num"],
            gamma=cfg["gamma"],
            tau=cfg["tau"],
            beta=cfg["beta"],
            lmbda=cfg["lmbda"],
            mmd_sigma=cfg["mmd_sigma"],
            target_mmd_thresh=cfg["target_mmd_thresh"],
            start_update_policy_step=cfg["start_update_policy_step"],
            num_q=cfg["num_q"],
            num_qc=cfg["num_qc"],
            PID=cfg["PID"],
            cost_limit=cfg["cost_limit"],
            episode_len=cfg["episode_len"],
            **common,
        )
        trainer = A.BEARLTrainer(
            model,
            None,
            logger=logger,
            actor_lr=cfg["actor_lr"],
            critic_lr=cfg["critic_lr"],
            vae_lr=cfg["vae_lr"],
            reward_scale=cfg["reward_scale"],
            cost_scale=cfg["cost_scale"],
            device=device,
        )
        dataset = TransitionDataset(data, reward_scale=cfg["reward_scale"], cost_scale=cfg["cost_scale"])
    elif module == "cpq":
        model = A.CPQ(
            a_hidden_sizes=cfg["a_hidden_sizes"],
            c_hidden_sizes=cfg["c_hidden_sizes"],
            vae_hidden_sizes=cfg["vae_hidden_sizes"],
            sample_action_num=cfg["sample_action_num"],
            gamma=cfg["gamma"],
            tau=cfg["tau"],
            beta=cfg["beta"],
            num_q=cfg["num_q"],
            num_qc=cfg["num_qc"],
            qc_scalar=cfg["qc_scalar"],
            cost_limit=cfg["cost_limit"],
            episode_len=cfg["episode_len"],
            **common,
        )
        trainer = A.CPQTrainer(
            model,
            None,
            logger=logger,
            actor_lr=cfg["actor_lr"],
            critic_lr=cfg["critic_lr"],
            alpha_lr=cfg["alpha_lr"],
            vae_lr=cfg["vae_lr"],
            reward_scale=cfg["reward_scale"],
            cost_scale=cfg["cost_scale"],
            device=device,
        )
        dataset = TransitionDataset(data, reward_scale=cfg["reward_scale"], cost_scale=cfg["cost_scale"])
    elif module == "coptidice":
        # train_coptidice.py builds the dataset before the model: the model needs its statistics.
        dataset = TransitionDataset(
            data, reward_scale=cfg["reward_scale"], cost_scale=cfg["cost_scale"], state_init=True
        )
        init_s_propotion, obs_std, act_std = dataset.get_dataset_states()
        model = A.COptiDICE(
            f_type=cfg["f_type"],
            init_state_propotion=init_s_propotion,
            observations_std=obs_std,
            actions_std=act_std,
            a_hidden_sizes=cfg["a_hidden_sizes"],
            c_hidden_sizes=cfg["c_hidden_sizes"],
            gamma=cfg["gamma"],
            alpha=cfg["alpha"],
            cost_ub_epsilon=cfg["cost_ub_epsilon"],
            num_nu=cfg["num_nu"],
            num_chi=cfg["num_chi"],
            cost_limit=cfg["cost_limit"],
            episode_len=cfg["episode_len"],
            **common,
        )
        trainer = A.COptiDICETrainer(
            model,
            None,
            logger=logger,
            actor_lr=cfg["actor_lr"],
            critic_lr=cfg["critic_lr"],
            scalar_lr=cfg["scalar_lr"],
            reward_scale=cfg["reward_scale"],
            cost_scale=cfg["cost_scale"],
            device=device,
        )
    else:  # pragma: no cover
        raise AssertionError(module)
    for name in ("qc_thres", "q_thres"):
        if hasattr(model, name):
            info[f"osrl_{name}"] = float(getattr(model, name))
    loader = DataLoader(dataset, batch_size=cfg["batch_size"], num_workers=num_workers)
    return model, trainer, logger, loader, info


def train_step(module: str, trainer: Any, batch: list) -> None:
    """One update, with the arguments ``train_<algo>.py``'s loop passes."""
    if module == "bc":
        observations, _, actions, _, _, _ = batch
        trainer.train_one_step(observations, actions)
    elif module == "coptidice":
        trainer.train_one_step(batch)
    else:
        observations, next_observations, actions, rewards, costs, done = batch
        trainer.train_one_step(observations, next_observations, actions, rewards, costs, done)


class OSRLPolicy:
    """OSRL's ``model.act`` as o3srl's evaluator calls a policy: a batch of observations → a batch of actions, one
    observation at a time, with the arguments of OSRL's ``rollout``."""

    def __init__(self, model: Any, module: str, bcql_eval: str) -> None:
        self.model, self.module, self.bcql_eval = model, module, bcql_eval

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return np.stack([self._act(np.asarray(o, np.float32)) for o in batch])

    def _act(self, obs: np.ndarray) -> np.ndarray:
        import torch

        m = self.model
        if self.module == "bc":
            return m.act(obs)
        if self.module == "bcql":
            if self.bcql_eval == "osrl":
                return m.act(obs)[0]  # a fresh z ~ clip(N(0, I), ±0.5) per action, as OSRL evaluates
            o = torch.tensor(obs[None], dtype=torch.float32, device=m.device)
            z = torch.zeros((1, m.vae.latent_dim), device=m.device)
            return m.actor(o, m.vae.decode(o, z)).cpu().numpy()[0]
        return m.act(obs, True, True)[0]  # deterministic: tanh of the Gaussian's mean (× max_action)


@dataclasses.dataclass
class CellSpec:
    algo: str
    task: str
    cost_limit: float
    seed: int
    steps: int
    dataset: str
    eval_episodes: int = 20
    eval_seed: int = 10_000
    eval_envs: int = 4
    bcql_eval: str = "osrl"

    @property
    def cell_id(self) -> str:
        return cell_id(self.task, self.algo, self.cost_limit, self.seed)

    def key(self) -> tuple:
        """What makes two rows the same run (the resumable skip compares these)."""
        return (self.cell_id, self.steps, self.eval_episodes, self.eval_seed, self.eval_policy)

    @property
    def eval_policy(self) -> str:
        if ALGOS[self.algo][0] == "bcql":
            return "stochastic z (OSRL)" if self.bcql_eval == "osrl" else "z = 0"
        return "deterministic"


def row_key(row: dict[str, Any]) -> tuple:
    return (
        row.get("cell_id"),
        row.get("steps"),
        row.get("eval_episodes"),
        row.get("eval_seed"),
        row.get("eval_policy"),
    )


def run_cell(
    spec: CellSpec,
    *,
    threads: int,
    num_workers: int,
    out_dir: Path,
    log_every: int,
    device: str = "cpu",
    save: bool = True,
) -> dict[str, Any]:
    import torch

    import_osrl()  # fsrl stubbed before anything of osrl is imported
    from osrl.common.exp_util import seed_all

    from o3srl.data.dataset import safe_frontier
    from o3srl.envs import make_env
    from o3srl.evaluate import evaluate

    module, _ = ALGOS[spec.algo]
    cfg = osrl_config(spec.algo, spec.task, spec.cost_limit, spec.seed, spec.steps)
    cfg.update(threads=threads, num_workers=num_workers, device=device)
    started = _dt.datetime.now(_dt.UTC)

    seed_all(spec.seed)
    torch.set_num_threads(threads)
    env = make_env(spec.task)
    max_action = float(env.action_space.high[0])
    env.close()
    data, ds = load_data(spec.dataset, spec.task)
    model, trainer, logger, loader, info = build(spec.algo, cfg, data, max_action, num_workers)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"[{spec.cell_id}] OSRL {type(model).__name__}: {n_params} parameters, {info}", flush=True)

    batches = iter(loader)
    t0, c0 = time.perf_counter(), time.process_time()
    for step in range(spec.steps):
        batch = [b.to(device) for b in next(batches)]
        train_step(module, trainer, batch)
        if log_every and (step + 1) % log_every == 0:
            dt = time.perf_counter() - t0
            print(f"[{spec.cell_id}] step {step + 1}/{spec.steps}  {(step + 1) / dt:.1f} steps/s", flush=True)
    train_seconds, train_cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    del batches, loader  # stops the DataLoader's workers, if any

    out = out_dir / spec.cell_id
    model_path = out / "model.pt"
    if save:
        out.mkdir(parents=True, exist_ok=True)
        torch.save({"model_state": model.state_dict(), "config": cfg}, model_path)

    model.eval()
    torch.manual_seed(spec.eval_seed)  # BCQ-Lag's OSRL evaluation draws z from torch's generator
    t1 = time.perf_counter()
    result = evaluate(
        OSRLPolicy(model, module, spec.bcql_eval),
        spec.task,
        episodes=spec.eval_episodes,
        cost_limit=spec.cost_limit,
        seed=spec.eval_seed,
        num_envs=spec.eval_envs,
        frontier=safe_frontier(ds.episodes, spec.cost_limit),
    )
    eval_seconds = time.perf_counter() - t1
    try:
        from importlib.metadata import version

        osrl_version = version("osrl-lib")
    except Exception:  # noqa: BLE001
        osrl_version = None
    d = result.to_dict()
    row = {
        "schema": 1,
        "side": "osrl",
        "cell_id": spec.cell_id,
        "task": spec.task,
        "algorithm": spec.algo,
        "osrl_class": type(model).__name__,
        "cost_limit": float(spec.cost_limit),
        "seed": spec.seed,
        "steps": spec.steps,
        "eval_episodes": spec.eval_episodes,
        "eval_seed": spec.eval_seed,
        "eval_envs": spec.eval_envs,
        "eval_policy": spec.eval_policy,
        "status": "ok",
        "metrics": result.metrics(),
        "episodes": {"reward": d["episode_rewards"], "cost": d["episode_costs"], "length": d["episode_lengths"]},
        "reward_reference": result.reference,
        "reward_range": list(result.reward_range),
        "safe_frontier": result.frontier,
        "dataset": str(spec.dataset),
        "dataset_sha256": file_sha256(spec.dataset),
        "training_transitions": info["transitions"],
        "osrl_thresholds": {k: v for k, v in info.items() if k.startswith("osrl_")},
        "final_train_stats": logger.last,
        "osrl_config": cfg,
        "parameters": n_params,
        "model": str(model_path) if save else None,
        "osrl_version": osrl_version,
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "host": socket.gethostname(),
        "machine": machine(),
        "device": device,
        "threads": threads,
        "train_seconds": round(train_seconds, 3),
        "train_cpu_seconds": round(train_cpu_seconds, 3),
        "eval_seconds": round(eval_seconds, 3),
        "started_at": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "finished_at": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    m = row["metrics"]
    print(
        f"[{spec.cell_id}] {spec.steps} steps in {train_seconds:.1f} s ({train_cpu_seconds:.1f} s CPU); normalised reward "
        f"{m['eval/normalized_reward']:.3f}, normalised cost {m['eval/normalized_cost']:.3f} "
        f"({spec.eval_episodes} episodes, {eval_seconds:.1f} s)",
        flush=True,
    )
    return row


# ------------------------------------------------------------------------------------------------ results file
def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line torn by a crash
    return rows


def done_keys(path: Path) -> set[tuple]:
    return {row_key(r) for r in read_rows(path) if r.get("status") == "ok"}


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Append one line under a lock, so that several processes can fill the same file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with open(path, "a+b") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")
            f.write((json.dumps(row, sort_keys=False) + "\n").encode())
            f.flush()
            os.fsync(f.fileno())


def run_specs(specs: list[CellSpec], args: argparse.Namespace) -> int:
    results = Path(args.results)
    failed = 0
    for spec in specs:
        if spec.key() in done_keys(results):
            print(f"[{spec.cell_id}] done already in {results}: skipped", flush=True)
            continue
        try:
            row = run_cell(
                spec,
                threads=args.threads,
                num_workers=args.num_workers,
                out_dir=Path(args.out_dir),
                log_every=args.log_every,
                device=args.device,
            )
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 — recorded, and the next cell runs
            import traceback

            traceback.print_exc()
            failed += 1
            row = {
                "schema": 1,
                "side": "osrl",
                "cell_id": spec.cell_id,
                "task": spec.task,
                "algorithm": spec.algo,
                "cost_limit": float(spec.cost_limit),
                "seed": spec.seed,
                "steps": spec.steps,
                "status": "failed",
                "error": repr(exc),
            }
        append_row(results, row)
    return 1 if failed else 0


# ------------------------------------------------------------------------------------------------ commands
def cmd_train(args: argparse.Namespace) -> int:
    from o3srl.data.dataset import data_dir

    dataset = args.dataset or str(data_dir() / f"{args.task}.hdf5")
    spec = CellSpec(
        algo=args.algo,
        task=args.task,
        cost_limit=args.cost_limit,
        seed=args.seed,
        steps=args.steps,
        dataset=dataset,
        eval_episodes=args.eval_episodes,
        eval_seed=args.eval_seed,
        eval_envs=args.eval_envs,
        bcql_eval=args.bcql_eval,
    )
    return run_specs([spec], args)


def cmd_grid(args: argparse.Namespace) -> int:
    """Every cell of an o3srl grid file whose algorithm OSRL implements, with the grid's own settings."""
    from o3srl.grid import load_grid

    grid = load_grid(args.grid)
    specs = []
    for cell in grid.cells:
        c = cell.config
        if c.algo not in ALGOS:
            continue
        if args.tasks and cell.task not in args.tasks:
            continue
        if args.algorithms and c.algo not in args.algorithms:
            continue
        if args.seeds and cell.seed not in args.seeds:
            continue
        specs.append(
            CellSpec(
                algo=c.algo,
                task=cell.task,
                cost_limit=cell.cost_limit,
                seed=cell.seed,
                steps=args.steps or c.steps,
                dataset=str(c.dataset),
                eval_episodes=args.eval_episodes or c.eval_episodes,
                eval_seed=c.eval_seed,
                eval_envs=c.eval_envs,
                bcql_eval=args.bcql_eval,
            )
        )
    if args.tasks:
        specs.sort(key=lambda s: args.tasks.index(s.task))
    print(f"{len(specs)} OSRL cells from {args.grid} → {args.results}", flush=True)
    if args.dry_run:
        done = done_keys(Path(args.results))
        for s in specs:
            print(f"  {'done' if s.key() in done else 'todo'}  {s.cell_id}  steps {s.steps}  {s.dataset}")
        return 0
    return run_specs(specs, args)


def cmd_check_configs(args: argparse.Namespace) -> int:
    """Compare OSRL_CONFIGS / EPISODE_LEN with OSRL's examples/configs in a checkout of its repository."""
    repo = str(Path(args.osrl_repo).resolve())
    sys.path.insert(0, repo)
    try:
        importlib.import_module("pyrallis")
    except ImportError:  # the configs only use pyrallis.field; stand in for it
        stub = types.ModuleType("pyrallis")

        def field(default: Any = None, is_mutable: bool = False, **_: Any) -> Any:
            if is_mutable:
                return dataclasses.field(default_factory=lambda: default)
            return dataclasses.field(default=default)

        stub.field = field  # type: ignore[attr-defined]
        sys.modules["pyrallis"] = stub
    problems = 0
    for module, (modname, table) in CONFIG_MODULES.items():
        configs = getattr(importlib.import_module(modname), table)
        for task, episode_len in EPISODE_LEN.items():
            theirs = dataclasses.asdict(configs[task]())
            ours = dict(OSRL_CONFIGS[module], task=task, episode_len=episode_len)
            for key, value in ours.items():
                if theirs.get(key) != value:
                    problems += 1
                    print(f"{modname} {task}: {key} = {theirs.get(key)!r}, transcribed {value!r}")
            for key in UNUSED_DATA_FIELDS:
                if theirs.get(key) is not None:
                    problems += 1
                    print(f"{modname} {task}: {key} = {theirs[key]!r}; this harness assumes None")
    print("configs agree" if problems == 0 else f"{problems} difference(s)")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def run_options(q: argparse.ArgumentParser) -> None:
        q.add_argument("--results", default=DEFAULT_RESULTS, help=f"results JSONL (default {DEFAULT_RESULTS})")
        q.add_argument("--out-dir", default=DEFAULT_OUT_DIR, help="where <cell id>/model.pt goes")
        q.add_argument("--threads", type=int, default=1, help="torch threads (OSRL's scripts: 4)")
        q.add_argument("--device", default="cpu", help="torch device for training (cpu, cuda)")
        q.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (OSRL's scripts: 8)")
        q.add_argument("--log-every", type=int, default=5000, help="print the step rate every N steps (0: never)")
        q.add_argument(
            "--bcql-eval",
            choices=("osrl", "mode"),
            default="osrl",
            help="BCQ-Lag's evaluated policy: OSRL's (a fresh latent z per action) or z = 0 (ours)",
        )

    t = sub.add_parser("train", help="one cell")
    t.add_argument("--algo", required=True, choices=sorted(ALGOS))
    t.add_argument("--task", required=True, choices=sorted(EPISODE_LEN))
    t.add_argument("--cost-limit", type=float, required=True)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--steps", type=int, default=100_000)
    t.add_argument("--dataset", default=None, help="DSRL HDF5 file (default: o3srl's data dir / TASK.hdf5)")
    t.add_argument("--eval-episodes", type=int, default=20)
    t.add_argument("--eval-seed", type=int, default=10_000, help="episode i is reset with seed EVAL_SEED + i")
    t.add_argument("--eval-envs", type=int, default=4)
    run_options(t)
    t.set_defaults(func=cmd_train)

    g = sub.add_parser("grid", help="the OSRL side of every cell of an o3srl grid file")
    g.add_argument("grid")
    g.add_argument("--tasks", nargs="*", default=[])
    g.add_argument("--algorithms", nargs="*", default=[], choices=sorted(ALGOS))
    g.add_argument("--seeds", nargs="*", type=int, default=[])
    g.add_argument("--steps", type=int, default=None, help="override the grid's steps (a smoke run)")
    g.add_argument("--eval-episodes", type=int, default=None, help="override the grid's evaluation episodes")
    g.add_argument("--dry-run", action="store_true")
    run_options(g)
    g.set_defaults(func=cmd_grid)

    c = sub.add_parser("check-configs", help="compare the transcribed defaults with OSRL's examples/configs")
    c.add_argument("--osrl-repo", required=True, help="a checkout of github.com/liuzuxin/OSRL")
    c.set_defaults(func=cmd_check_configs)

    args = p.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
