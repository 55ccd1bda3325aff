"""Behaviour cloning baselines: BC-All (every transition) and BC-Safe (the episodes whose cost is within the limit).

The two simplest baselines of offline safe RL, as OSRL runs them (``osrl/algorithms/bc.py`` and the ``all`` / ``safe``
modes of ``process_bc_dataset`` in ``osrl/common/dataset.py``, defaults from ``examples/configs/bc_configs.py``):

    BC-All:  min_π  E_(s, a) ~ D       ‖π(s) − a‖² / dim(a)
    BC-Safe: min_π  E_(s, a) ~ D_safe  ‖π(s) − a‖² / dim(a),   D_safe = the episodes of D with C(τ) = Σ_t c_t ≤ κ

π is a deterministic MLP with a tanh output (the same network as TD3+BC's actor; normalised observations, actions
in [−1, 1]), trained with Adam on uniform minibatches. BC-Safe selects whole episodes by their undiscounted cost
return, as OSRL's ``safe`` mode does with its BC configs' γ = 1. OSRL's defaults: two hidden layers of 256, learning
rate 1e-3, batch 512, 300k steps (the step count here is ``--steps``).

Neither reads rewards or costs while training; BC-Safe's cost limit decides only which episodes it imitates, so it is
safe when the data's safe episodes are (the frontier R*_data(κ) is what it can reach at best, the mean reward of the
safe episodes what it reaches when it imitates their average).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from o3srl.algos.base import Metrics, OutputKind, Setting, StepLearner, adam_step
from o3srl.errors import ConfigError
from o3srl.nets import Actor

BCMode = Literal["all", "safe"]


@dataclass(frozen=True)
class BCConfig:
    """Behaviour cloning hyperparameters (OSRL's BC defaults)."""

    hidden: tuple[int, ...] = (256, 256)
    learning_rate: float = 1e-3
    batch_size: int = 512


class BCState(flax.struct.PyTreeNode):
    actor: Any
    opt: Any
    key: jax.Array


def safe_transitions(start: np.ndarray, length: np.ndarray, cost_return: np.ndarray, cost_limit: float) -> np.ndarray:
    """Indices of the transitions of the episodes whose undiscounted cost return is at most ``cost_limit`` (BC-Safe's
    data), in dataset order."""
    keep = cost_return <= cost_limit + 1e-9
    if not keep.any():
        return np.zeros((0,), np.int64)
    return np.concatenate([np.arange(s, s + n) for s, n in zip(start[keep], length[keep])]).astype(np.int64)


def actor_network(config: BCConfig, obs_dim: int, act_dim: int) -> tuple[Callable[[Any, jax.Array], jax.Array], Any]:
    """The cloned policy's action function and a template of its parameters (what a saved policy is read into)."""
    net = Actor(tuple(config.hidden), act_dim)
    return net.apply, net.init(jax.random.PRNGKey(0), jnp.zeros((1, obs_dim)))


class BC(StepLearner):
    """Behaviour cloning as a learner of the training loop (:class:`o3srl.algos.base.Learner`): one round is
    ``steps_per_round`` gradient steps, so its runs log, checkpoint and resume like O3SRL's."""

    def __init__(
        self,
        config: BCConfig,
        setting: Setting,
        mode: BCMode,
        steps_per_round: int,
        selected: np.ndarray | None = None,
    ) -> None:
        if config.batch_size < 1 or config.learning_rate <= 0 or not config.hidden or min(config.hidden) < 1:
            raise ConfigError(
                f"bc: batch_size and hidden widths must be ≥ 1 and learning_rate > 0, got {config.batch_size}, "
                f"{config.hidden} and {config.learning_rate}"
            )
        if mode == "safe" and (selected is None or selected.size == 0):
            raise ConfigError(
                f"bc-safe: no episode of the dataset has a cost return within the cost limit {setting.cost_limit:g}; "
                "raise --cost-limit or use --algo bc-all"
            )
        self.config, self.setting, self.mode = config, setting, mode
        self.title = "BC-Safe" if mode == "safe" else "BC-All"
        self.steps_per_round = steps_per_round
        self.selected = None if mode == "all" else np.asarray(selected, np.int32)
        self.net = Actor(tuple(config.hidden), setting.act_dim)
        self.tx = optax.adam(config.learning_rate)

    def init(self, key: jax.Array) -> BCState:
        k_net, k_state = jax.random.split(key)
        actor = self.net.init(k_net, jnp.zeros((1, self.setting.obs_dim)))
        return BCState(actor=actor, opt=self.tx.init(actor), key=k_state)

    def act(self, actor_params: Any, obs: jax.Array) -> jax.Array:
        return self.net.apply(actor_params, obs)

    def loss(self, actor: Any, obs: jax.Array, actions: jax.Array) -> jax.Array:
        return ((self.act(actor, obs) - actions) ** 2).mean()  # OSRL's F.mse_loss: the mean over batch and action

    def update(self, state: BCState, data: Any) -> tuple[BCState, Metrics]:
        """One Adam step on a uniform minibatch of the imitated transitions."""
        key, k = jax.random.split(state.key)
        if self.selected is None:
            idx = jax.random.randint(k, (self.config.batch_size,), 0, data.obs.shape[0])
        else:
            pool = jnp.asarray(self.selected)
            idx = pool[jax.random.randint(k, (self.config.batch_size,), 0, pool.shape[0])]
        value, grads = jax.value_and_grad(self.loss)(state.actor, data.obs[idx], data.actions[idx])
        actor, opt = adam_step(self.tx, state.actor, state.opt, grads)
        return state.replace(actor=actor, opt=opt, key=key), {"loss/actor": value}

    def output(self, state: BCState) -> tuple[Any, OutputKind]:
        return state.actor, "single"

    def run_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"bc_mode": self.mode}
        if self.selected is not None:
            info["bc_transitions"] = int(self.selected.size)
        return info
