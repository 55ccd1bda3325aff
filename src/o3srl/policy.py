"""A trained policy as a plain callable ``obs -> action`` on raw (environment-scale) numpy arrays.

A policy that conditions on more than the observation keeps what it needs itself, per environment copy (``slot``,
row ``slot`` of a batch): :class:`MixturePolicy` the member drawn for the episode, :class:`SequencePolicy` the episode
so far. Both are told by ``begin_episode(slot)`` when an episode starts; a :class:`SequencePolicy` is also told by
``observe(slot, reward, cost)`` what each step brought (:func:`o3srl.evaluate.evaluate` calls whichever of the two
a policy has).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from o3srl.checkpoint import read_payload, stats_from_dict
from o3srl.data.sampler import NormStats, denormalize_action, normalize_obs
from o3srl.errors import O3SRLError
from o3srl.rundir import POLICY_NAME


def as_batch(obs: np.ndarray, obs_dim: int) -> tuple[np.ndarray, bool]:
    """``obs`` as a float32 batch of rows, and whether it was one observation (a 1-d array); one clear error when
    its last dimension is not ``obs_dim``."""
    obs = np.asarray(obs, np.float32)
    single = obs.ndim == 1
    batch = obs[None] if single else obs
    if batch.shape[-1] != obs_dim:
        raise O3SRLError(f"policy expects observations of dim {obs_dim}, got shape {obs.shape}")
    return batch, single


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
        batch, single = as_batch(obs, self.obs_dim)
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
        batch, single = as_batch(obs, self.obs_dim)
        every = np.asarray(
            self._act(self.actor_params, jnp.asarray(normalize_obs(batch, self.stats)))
        )  # (members, B, act)
        rows = np.arange(batch.shape[0])
        chosen = np.array([self._members[i] if i in self._members else self.begin_episode(i) for i in range(len(rows))])
        action = np.asarray(denormalize_action(every[chosen, rows], self.stats), np.float32)
        return action[0] if single else action


@dataclass
class Context:
    """The last K steps of one episode, oldest first, as a sequence policy reads them: the first ``length`` rows of
    each array are filled (normalised observations, actions in [−1, 1], reward- and cost-to-go in the data's
    units, timesteps)."""

    obs: np.ndarray
    actions: np.ndarray
    reward_to_go: np.ndarray
    cost_to_go: np.ndarray
    timesteps: np.ndarray
    length: int = 0
    step: int = 0
    """Steps taken in the episode so far."""
    to_go: list[float] = field(default_factory=list)
    """[R̂, Ĉ]: the reward still to earn and the cost still to spend (the targets less what has been received)."""

    def push(self, obs: np.ndarray) -> None:
        """A new step: ``obs`` at the current to-go values, its action not yet taken (zeros)."""
        k = self.obs.shape[0]
        if self.length == k:
            for a in (self.obs, self.actions, self.reward_to_go, self.cost_to_go, self.timesteps):
                a[:-1] = a[1:].copy()
        else:
            self.length += 1
        i = self.length - 1
        self.obs[i], self.actions[i] = obs, 0.0
        self.reward_to_go[i], self.cost_to_go[i] = self.to_go
        self.timesteps[i] = self.step


_WINDOW = ("obs", "actions", "reward_to_go", "cost_to_go", "timesteps")
"""The context's arrays in the order a window function takes them (:data:`o3srl.algos.cdt.WindowFn`)."""


class SequencePolicy(Policy):
    """A policy that conditions on the episode so far and on targets set at its start (CDT's).

    ``begin_episode(slot)`` starts environment copy ``slot``'s episode at the targets ``(R̂_0, Ĉ_0)``; each call is
    one step of every row's episode (a row with no episode yet starts one): the row's observation joins its context
    (the last ``seq_len`` steps), the network acts on the context, and the action joins it too.
    ``observe(slot, reward, cost)`` subtracts what the step brought from the slot's to-go values; a caller that never
    calls it leaves the targets where they started.
    """

    def __init__(
        self,
        window_fn: Callable[..., jax.Array],
        params: Any,
        stats: NormStats,
        seq_len: int,
        targets: tuple[float, float] | None = None,
    ) -> None:
        self.actor_params = params
        self.stats = stats
        self._window = jax.jit(window_fn)
        self.seq_len = seq_len
        self.act_dim = int(stats.action_low.shape[0])
        saved = np.asarray(params["targets"], np.float64)
        self.targets = targets if targets is not None else (float(saved[0]), float(saved[1]))
        """(R̂_0, Ĉ_0) of the episodes begun from now on (by default the ones saved with the policy)."""
        self._contexts: dict[int, Context] = {}

    def begin_episode(self, slot: int = 0) -> Context:
        k = self.seq_len
        self._contexts[slot] = Context(
            obs=np.zeros((k, self.obs_dim), np.float32),
            actions=np.zeros((k, self.act_dim), np.float32),
            reward_to_go=np.zeros(k, np.float32),
            cost_to_go=np.zeros(k, np.float32),
            timesteps=np.zeros(k, np.int32),
            to_go=[float(self.targets[0]), float(self.targets[1])],
        )
        return self._contexts[slot]

    def context(self, slot: int = 0) -> Context:
        """Slot ``slot``'s context (for inspection)."""
        return self._contexts[slot]

    def observe(self, slot: int, reward: float, cost: float) -> None:
        ctx = self._contexts[slot]
        ctx.to_go[0] -= float(reward)
        ctx.to_go[1] -= float(cost)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        batch, single = as_batch(obs, self.obs_dim)
        normalised = np.asarray(normalize_obs(batch, self.stats), np.float32)
        contexts = [self._contexts[i] if i in self._contexts else self.begin_episode(i) for i in range(len(batch))]
        for ctx, o in zip(contexts, normalised):
            ctx.push(o)
        action = np.asarray(
            self._window(
                self.actor_params,
                *(jnp.asarray(np.stack([getattr(c, name) for c in contexts])) for name in _WINDOW),
                jnp.asarray([c.length for c in contexts], jnp.int32),
            )
        )
        for ctx, a in zip(contexts, action):
            ctx.actions[ctx.length - 1] = a
            ctx.step += 1
        action = np.asarray(denormalize_action(action, self.stats), np.float32)
        return action[0] if single else action


class CostTrackingPolicy(Policy):
    """A policy that conditions on the cost received so far in each environment copy's episode (CAPS's switching
    policy, CCAC's budget-conditioned one).

    ``begin_episode(slot)`` starts copy ``slot``'s episode with nothing spent; each call is one step of every row's
    episode (a row with no episode yet starts one, :meth:`start_rows`; :meth:`end_step` counts the step);
    ``observe(slot, reward, cost)`` adds the step's cost to what the slot has spent. ``cost_limit`` (default: the κ
    saved with the policy) may be changed between episodes: such a policy takes a new κ without retraining."""

    def __init__(self, params: Any, stats: NormStats, cost_limit: float) -> None:
        self.actor_params = params
        self.stats = stats
        self.cost_limit = float(cost_limit)
        self._spent: dict[int, float] = {}
        self._steps: dict[int, int] = {}

    def begin_episode(self, slot: int = 0) -> None:
        self._spent[slot], self._steps[slot] = 0.0, 0

    def observe(self, slot: int, reward: float, cost: float) -> None:
        del reward
        self._spent[slot] += float(cost)

    def spent(self, slot: int = 0) -> float:
        """The cost slot ``slot`` has received in its episode so far."""
        return self._spent[slot]

    def steps(self, slot: int = 0) -> int:
        """The steps slot ``slot`` has taken in its episode so far."""
        return self._steps[slot]

    def start_rows(self, rows: int) -> None:
        """Begin an episode for each of the first ``rows`` slots that has none yet."""
        for i in range(rows):
            if i not in self._spent:
                self.begin_episode(i)

    def end_step(self, rows: int) -> None:
        """Count one step of the first ``rows`` slots' episodes."""
        for i in range(rows):
            self._steps[i] += 1


def sequence_policy(cfg: Any, params: Any, stats: NormStats) -> Policy:
    """The sequence policy of a run of ``cfg`` with output parameters ``params``: CDT's :class:`SequencePolicy`,
    CAPS's switching policy (:class:`o3srl.algos.caps.SwitchingPolicy`) or CCAC's budget-conditioned policy
    (:class:`o3srl.algos.ccac.BudgetPolicy`); the last two condition on the cost received so far."""
    if cfg.algo == "caps":
        from o3srl.algos.caps import switching_policy

        return switching_policy(cfg.caps, params, stats)
    if cfg.algo == "ccac":
        from o3srl.algos.ccac import budget_policy

        return budget_policy(cfg.ccac, params, stats)
    from o3srl.algos.cdt import actor_network

    window_fn, _ = actor_network(cfg.cdt, int(stats.obs_mean.shape[0]), int(stats.action_low.shape[0]))
    return SequencePolicy(window_fn, params, stats, cfg.cdt.seq_len)


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
    if cfg.algo == "cdt":
        from o3srl.algos.cdt import actor_network as cdt_actor
        from o3srl.algos.cdt import first_window

        window_fn, template = cdt_actor(cfg.cdt, obs_dim, act_dim)

        def first_step(params: Any, obs: jax.Array) -> jax.Array:  # the action at an episode's first step
            return window_fn(params, *first_window(obs, params["targets"], cfg.cdt.seq_len, act_dim))

        return first_step, template
    if cfg.algo == "fisor":
        from o3srl.algos.fisor import actor_network as fisor_actor

        return fisor_actor(cfg.fisor, obs_dim, act_dim)
    if cfg.algo == "ccac":
        from o3srl.algos.ccac import actor_network as ccac_network
        from o3srl.algos.ccac import first_step_fn as ccac_first_step

        budget_fn, template = ccac_network(cfg.ccac, obs_dim, act_dim)
        return ccac_first_step(cfg.ccac, budget_fn), template
    if cfg.algo == "caps":
        from o3srl.algos.caps import actor_network as caps_network
        from o3srl.algos.caps import first_step_fn

        switch_fn, template = caps_network(cfg.caps, obs_dim, act_dim)
        return first_step_fn(cfg.caps, switch_fn), template
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
    if payload.get("kind") == "sequence":
        return sequence_policy(cfg, actor, stats)
    return Policy(act_fn, actor, stats)
