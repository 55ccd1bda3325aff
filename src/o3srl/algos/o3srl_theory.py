"""O3SRL, theoretical version (Algorithm 1): a continuous λ-player with off-policy evaluation and a mixture output.

One iteration t = 1..T::

    π_t  = oracle best response to r − λ_t (c − b): N warm-started oracle steps at λ_t
    FQE  : fit Q_r^{π_t}, Q_c^{π_t} on the data with the policy frozen (F steps, warm-started from π_{t−1}'s FQE)
    V̂_c  = mean over dataset initial states of Q_c^{π_t}(s0, π_t(s0))    (likewise V̂_r)
    λ_{t+1} = Π_[0, C](λ_t + η (V̂_c − B))                                 (projected online gradient descent on the
                                                                            λ-player's loss −λ (V̂_c − B))
Output: the uniform mixture of π_1..π_T (at the start of each episode one iterate is drawn uniformly and followed for
the whole episode; its value is the average of the iterates' values) and the average λ. Unlike the practical
version, this needs off-policy evaluation every iteration; it exists to check the theory and for ablations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from o3srl.algos.base import OutputKind, Setting
from o3srl.algos.iql import IQL
from o3srl.algos.td3bc import TD3BC
from o3srl.bandits import ogd_lambda_step
from o3srl.data.sampler import DeviceData, sample_batch, sample_init_obs
from o3srl.errors import ConfigError
from o3srl.nets import Critics


@dataclass(frozen=True)
class TheoryConfig:
    """Algorithm 1's λ-player and evaluation (used with ``--variant theory``)."""

    iterations: int = 20
    """T: number of best-response iterations (each runs steps / T oracle steps)."""
    max_lambda: float = 5.0
    """C: λ is projected onto [0, C]."""
    lambda_lr: float | None = None
    """OGD step η; None: C / (D sqrt(T)) with D = the largest possible |V_c − B| (the standard rate for a linear
    loss)."""
    initial_lambda: float = 0.0
    fqe_steps: int = 2_000
    """Gradient steps of fitted Q evaluation per iterate."""
    fqe_lr: float = 3e-4
    fqe_batch: int = 256
    eval_batch: int = 1_024
    """Initial states used to read V̂_r and V̂_c off the FQE critics."""


class TheoryState(flax.struct.PyTreeNode):
    oracle: Any
    fqe: Any  # {"reward", "cost"} critic params
    fqe_target: Any
    fqe_opt: Any
    lam: jax.Array
    iterates: Any  # actor params stacked along a leading axis of size T
    count: jax.Array
    key: jax.Array


class O3SRLTheory:
    """Pure functions of :class:`TheoryState`; one "round" of the training loop is one whole iteration."""

    title = "the theory variant"

    def __init__(self, config: TheoryConfig, oracle: TD3BC | IQL, setting: Setting) -> None:
        if config.iterations < 1:
            raise ConfigError(f"theory.iterations must be ≥ 1, got {config.iterations}")
        if setting.total_steps % config.iterations:
            raise ConfigError(
                f"steps ({setting.total_steps}) must be a multiple of theory.iterations ({config.iterations})"
            )
        if not 0 <= config.initial_lambda <= config.max_lambda:
            raise ConfigError("theory.initial_lambda must lie in [0, theory.max_lambda]")
        self.config = config
        self.oracle = oracle
        self.setting = setting
        self.steps_per_round = setting.total_steps // config.iterations
        gamma = oracle.config.gamma
        self.gamma = gamma
        self.budget = setting.budget(oracle.config)
        budget = self.budget.value  # the critics' units
        spread = max(oracle.config.cost_scale * setting.cost_abs_max / (1.0 - gamma) - budget, budget, 1e-6)
        self.lambda_lr = (
            config.lambda_lr
            if config.lambda_lr is not None
            else config.max_lambda / (spread * np.sqrt(config.iterations))
        )
        self.critic = Critics(oracle.config.hidden, 2)
        self.fqe_tx = optax.adam(config.fqe_lr)

    def init(self, key: jax.Array) -> TheoryState:
        k_oracle, k_r, k_c, k_run = jax.random.split(key, 4)
        oracle_state = self.oracle.init(k_oracle)
        obs = jnp.zeros((1, self.setting.obs_dim))
        act = jnp.zeros((1, self.setting.act_dim))
        fqe = {"reward": self.critic.init(k_r, obs, act), "cost": self.critic.init(k_c, obs, act)}
        iterates = jax.tree.map(lambda x: jnp.zeros((self.config.iterations, *x.shape), x.dtype), oracle_state.actor)
        return TheoryState(
            oracle=oracle_state,
            fqe=fqe,
            fqe_target=fqe,
            fqe_opt=self.fqe_tx.init(fqe),
            lam=jnp.asarray(self.config.initial_lambda, jnp.float32),
            iterates=iterates,
            count=jnp.zeros((), jnp.int32),
            key=k_run,
        )

    def prepare(self, state: TheoryState, data: DeviceData) -> TheoryState:
        """Nothing to do before the first iteration."""
        del data
        return state

    def act(self, actor_params: Any, obs: jax.Array) -> jax.Array:
        return self.oracle.act(actor_params, obs)

    def output(self, state: TheoryState) -> tuple[Any, OutputKind]:
        """The uniform mixture of the iterates π_1..π_T."""
        return state.iterates, "mixture"

    def run_info(self) -> dict[str, Any]:
        """The budget, and the λ-player in the practical version's terms: one "arm", the largest λ C, and the OGD
        step η as the learning rate."""
        return {
            "budget_per_step": self.budget.per_step,
            "budget_value": self.budget.reported_value,
            "arms": np.asarray([self.config.max_lambda], np.float32).tolist(),
            "bandit_learning_rate": self.lambda_lr,
            "bandit_exploration": 0.0,
        }

    def bandit_arms(self) -> list[float] | None:
        """No bandit: λ moves continuously (its history is in the metrics)."""
        return None

    @staticmethod
    def upgrade_state_dict(state_dict: dict[str, Any], template: TheoryState) -> dict[str, Any]:
        """The theory variant's state has one layout so far."""
        del template
        return state_dict

    def _fqe_loss(self, fqe: Any, target: Any, actor: Any, batch: Any) -> jax.Array:
        cfg = self.oracle.config
        next_a = self.oracle.act(actor, batch.next_obs)
        not_done = 1.0 - batch.terminals
        y_r = cfg.reward_scale * batch.rewards + self.gamma * not_done * self.critic.apply(
            target["reward"], batch.next_obs, next_a
        ).mean(0)
        y_c = cfg.cost_scale * batch.costs + self.gamma * not_done * self.critic.apply(
            target["cost"], batch.next_obs, next_a
        ).mean(0)
        q_r = self.critic.apply(fqe["reward"], batch.obs, batch.actions)
        q_c = self.critic.apply(fqe["cost"], batch.obs, batch.actions)
        return ((q_r - jax.lax.stop_gradient(y_r)) ** 2).mean() + ((q_c - jax.lax.stop_gradient(y_c)) ** 2).mean()

    def _iteration(self, state: TheoryState, data: DeviceData) -> tuple[TheoryState, dict[str, jax.Array]]:
        cfg = self.config
        key, k_oracle, k_fqe, k_eval = jax.random.split(state.key, 4)

        def oracle_step(s: Any, step_key: jax.Array) -> tuple[Any, dict[str, jax.Array]]:
            k_batch, k_update = jax.random.split(step_key)
            batch = sample_batch(k_batch, data, self.oracle.config.batch_size)
            return self.oracle.update(s, batch, state.lam, self.budget.per_step, k_update)

        oracle_state, oracle_metrics = jax.lax.scan(
            oracle_step, state.oracle, jax.random.split(k_oracle, self.steps_per_round)
        )
        actor = oracle_state.actor

        def fqe_step(carry: tuple[Any, Any, Any], step_key: jax.Array) -> tuple[tuple[Any, Any, Any], jax.Array]:
            fqe, target, opt = carry
            batch = sample_batch(step_key, data, cfg.fqe_batch)
            loss, grads = jax.value_and_grad(self._fqe_loss)(fqe, target, actor, batch)
            updates, opt = self.fqe_tx.update(grads, opt, fqe)
            fqe = optax.apply_updates(fqe, updates)
            return (fqe, optax.incremental_update(fqe, target, self.oracle.config.tau), opt), loss

        (fqe, fqe_target, fqe_opt), fqe_losses = jax.lax.scan(
            fqe_step, (state.fqe, state.fqe_target, state.fqe_opt), jax.random.split(k_fqe, cfg.fqe_steps)
        )
        s0 = sample_init_obs(k_eval, data, cfg.eval_batch)
        a0 = self.oracle.act(actor, s0)
        v_r = self.critic.apply(fqe["reward"], s0, a0).mean()
        v_c = self.critic.apply(fqe["cost"], s0, a0).mean()
        new_lam = ogd_lambda_step(state.lam, v_c, self.budget.value, self.lambda_lr, cfg.max_lambda)
        iterates = jax.tree.map(lambda stack, leaf: stack.at[state.count].set(leaf), state.iterates, actor)
        metrics = {k: jnp.nanmean(v) for k, v in oracle_metrics.items()}
        metrics.update(
            {
                "bandit/lambda": state.lam,
                "theory/next_lambda": new_lam,
                "theory/fqe_loss": fqe_losses[-100:].mean(),
                "feedback/cost_estimate": v_c / self.oracle.config.cost_scale,
                "feedback/reward_estimate": v_r / self.oracle.config.reward_scale,
                "feedback/budget": jnp.asarray(self.budget.reported_value, jnp.float32),
            }
        )
        new_state = TheoryState(
            oracle=oracle_state,
            fqe=fqe,
            fqe_target=fqe_target,
            fqe_opt=fqe_opt,
            lam=new_lam,
            iterates=iterates,
            count=state.count + 1,
            key=key,
        )
        return new_state, metrics

    def run_rounds(
        self, state: TheoryState, data: DeviceData, num_rounds: int
    ) -> tuple[TheoryState, dict[str, jax.Array]]:
        def body(s: TheoryState, _: None) -> tuple[TheoryState, dict[str, jax.Array]]:
            return self._iteration(s, data)

        return jax.lax.scan(body, state, None, length=num_rounds)
