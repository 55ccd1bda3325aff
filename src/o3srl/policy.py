"""A trained policy as a plain callable ``obs -> action`` on raw (environment-scale) numpy arrays."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from o3srl.checkpoint import read_payload, stats_from_dict
from o3srl.data.sampler import NormStats, denormalize_action, normalize_obs
from o3srl.errors import O3SRLError
from o3srl.rundir import POLICY_NAME


class Policy:
    """Normalises observations, runs the actor and maps actions back to the environment's bounds.

    Accepts one observation (shape (obs_dim,)) or a batch (shape (B, obs_dim)) and returns the same rank.
    """

    def __init__(self, act_fn: Callable[[Any, jax.Array], jax.Array], actor_params: Any, stats: NormStats) -> None:
        self.actor_params = actor_params
        self.stats = stats
        self._act = jax.jit(act_fn)

    @property
    def obs_dim(self) -> int:
        return int(self.stats.obs_mean.shape[0])

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, np.float32)
        single = obs.ndim == 1
        batch = obs[None] if single else obs
        if batch.shape[-1] != self.obs_dim:
            raise O3SRLError(f"policy expects observations of dim {self.obs_dim}, got shape {obs.shape}")
        action = self._act(self.actor_params, jnp.asarray(normalize_obs(batch, self.stats)))
        action = np.asarray(denormalize_action(np.asarray(action), self.stats), np.float32)
        return action[0] if single else action


class MixturePolicy(Policy):
    """The uniform mixture of several policies (the theory variant's output).

    At the start of each episode one member is drawn uniformly and followed for the whole episode, so the mixture's
    value is the average of the members' values. ``begin_episode(slot)`` draws the member of environment copy
    ``slot`` (row ``slot`` of a batch); a row with no draw yet gets one on first use.

    The draws are made without replacement in blocks: episodes 1..n follow a random permutation of the n members,
    the next n another one, and so on. Every episode's member is still uniform over the members, so the policy is
    the same uniform mixture episode by episode; an evaluation of E episodes then estimates the mixture's value by
    stratified sampling (each member followed ⌊E / n⌋ or ⌈E / n⌉ times) instead of by E independent draws, which
    removes the draw's own noise from the estimate: with members costing 0 and 80, 20 independent draws put the
    estimated cost anywhere in 40 ± 18 (two standard deviations); 20 stratified ones over 10 members give 40.
    """

    def __init__(
        self, act_fn: Callable[[Any, jax.Array], jax.Array], stacked_params: Any, stats: NormStats, seed: int = 0
    ):
        super().__init__(jax.vmap(act_fn, in_axes=(0, None)), stacked_params, stats)
        self.num_members = int(jax.tree.leaves(stacked_params)[0].shape[0])
        self._rng = np.random.default_rng(seed)
        self._members: dict[int, int] = {}
        self._block: list[int] = []

    def begin_episode(self, slot: int = 0) -> int:
        if not self._block:
            self._block = [int(m) for m in self._rng.permutation(self.num_members)]
        self._members[slot] = self._block.pop()
        return self._members[slot]

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, np.float32)
        single = obs.ndim == 1
        batch = obs[None] if single else obs
        if batch.shape[-1] != self.obs_dim:
            raise O3SRLError(f"policy expects observations of dim {self.obs_dim}, got shape {obs.shape}")
        every = np.asarray(
            self._act(self.actor_params, jnp.asarray(normalize_obs(batch, self.stats)))
        )  # (members, B, act)
        rows = np.arange(batch.shape[0])
        chosen = np.array([self._members[i] if i in self._members else self.begin_episode(i) for i in range(len(rows))])
        action = np.asarray(denormalize_action(every[chosen, rows], self.stats), np.float32)
        return action[0] if single else action


def policy_network(cfg: Any, obs_dim: int, act_dim: int) -> tuple[Callable[[Any, jax.Array], jax.Array], Any]:
    """The actor network a run of ``cfg`` (a :class:`~o3srl.config.TrainConfig`) trains: its action function and a
    template of its parameters (what a saved policy is read into)."""
    from o3srl.algos.o3srl import make_oracle
    from o3srl.config import BC_ALGOS

    if cfg.algo in BC_ALGOS:
        from o3srl.algos.bc import actor_network

        return actor_network(cfg.bc, obs_dim, act_dim)
    if cfg.algo == "cpq":
        from o3srl.algos.cpq import actor_network as cpq_actor

        return cpq_actor(cfg.cpq, obs_dim, act_dim)
    if cfg.algo == "bcq-lag":
        from o3srl.algos.bcql import actor_network as bcql_actor

        return bcql_actor(cfg.bcql, obs_dim, act_dim)
    if cfg.algo == "coptidice":
        from o3srl.algos.coptidice import actor_network as coptidice_actor

        return coptidice_actor(cfg.coptidice, obs_dim, act_dim)
    if cfg.algo == "bear-lag":
        from o3srl.algos.bearl import actor_network as bearl_actor

        return bearl_actor(cfg.bearl, obs_dim, act_dim)
    if cfg.algo == "fisor":
        from o3srl.algos.fisor import actor_network as fisor_actor

        return fisor_actor(cfg.fisor, obs_dim, act_dim)
    oracle = make_oracle(cfg.oracle_name, cfg.td3bc, cfg.iql, obs_dim, act_dim)
    return oracle.act, oracle.init(jax.random.PRNGKey(0)).actor


def load_policy(run_dir: str | Path) -> Policy:
    """Load the final policy written by ``o3srl train`` into ``run_dir``."""
    from o3srl.config import from_dict

    run_dir = Path(run_dir)
    path = run_dir / POLICY_NAME
    if not path.exists():
        raise O3SRLError(f"{run_dir} holds no trained policy ({POLICY_NAME} is missing); has the run finished?")
    payload = read_payload(path)
    import json

    from o3srl.checkpoint import CheckpointError, restore
    from o3srl.errors import ConfigError

    try:
        cfg = from_dict(json.loads(payload["config"]))
        cfg.resolved()
        stats = stats_from_dict(payload["norm_stats"])
    except (KeyError, TypeError, ValueError) as exc:  # ConfigError is a ValueError
        what = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
        raise CheckpointError(f"{path} holds no usable config or normalisation ({what})") from None
    obs_dim, act_dim = stats.obs_mean.shape[0], stats.action_low.shape[0]
    act_fn, template = policy_network(cfg, obs_dim, act_dim)
    if payload.get("kind") == "mixture":
        # The theory variant's iterates or the practical variant's tail members: the count is the stack's length.
        leaves = jax.tree.leaves(payload.get("actor"))
        members = int(np.shape(leaves[0])[0]) if leaves and np.ndim(leaves[0]) > 0 else cfg.theory.iterations
        stacked = jax.tree.map(lambda x: jnp.zeros((members, *x.shape), x.dtype), template)
        actors = restore(stacked, payload.get("actor"), str(path), "the actor of the config saved with it")
        return MixturePolicy(act_fn, actors, stats, seed=cfg.eval_seed)
    actor = restore(template, payload.get("actor"), str(path), "the actor of the config saved with it")
    return Policy(act_fn, actor, stats)
