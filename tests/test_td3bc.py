"""TD3+BC's cost critics read through max(Q_c, 0): hand-computed values on critics with a constant output."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from o3srl.algos.base import twin_critic_loss
from o3srl.algos.td3bc import TD3BC, TD3BCConfig
from o3srl.data.sampler import Batch

OBS, ACT, N = 3, 2, 4
GAMMA = 0.99


def with_cost_critic(oracle: TD3BC, bias: float, slope: float = 0.0):
    """A state whose cost critics (and their targets) output ``bias − slope · Σ relu(last hidden layer)``: a constant
    for slope 0, and for slope > 0 a critic that depends on the action and is below ``bias`` everywhere."""
    state = oracle.init(jax.random.PRNGKey(0))
    out = f"Dense_{len(oracle.config.hidden)}"
    layers = dict(state.critic["cost"]["params"]["VmapMLP_0"])
    layers[out] = {
        "kernel": jnp.full_like(layers[out]["kernel"], -slope),
        "bias": jnp.full_like(layers[out]["bias"], bias),
    }
    cost = {"params": {"VmapMLP_0": layers}}
    critic = {"reward": state.critic["reward"], "cost": cost}
    return state.replace(critic=critic, critic_target=critic)


def batch(cost: float = 1.0) -> Batch:
    rng = np.random.default_rng(0)
    return Batch(
        obs=jnp.asarray(rng.normal(size=(N, OBS)), jnp.float32),
        actions=jnp.asarray(rng.uniform(-1, 1, size=(N, ACT)), jnp.float32),
        rewards=jnp.zeros(N, jnp.float32),
        costs=jnp.full(N, cost, jnp.float32),
        next_obs=jnp.asarray(rng.normal(size=(N, OBS)), jnp.float32),
        terminals=jnp.zeros(N, jnp.float32),
    )


@pytest.mark.parametrize("floor", [True, False])
def test_cost_floor_in_estimate_and_target(floor):
    oracle = TD3BC(TD3BCConfig(hidden=(8, 8), gamma=GAMMA, cost_floor=floor), OBS, ACT)
    state = with_cost_critic(oracle, -5.0)
    b = batch(cost=1.0)

    _, q_c = oracle.policy_values(state, b.obs)
    np.testing.assert_allclose(q_c, 0.0 if floor else -5.0, atol=1e-6)

    # y_c = c + γ [Q_c^targ]₊ = 1 (floor) or 1 − 0.99 · 5 = −3.95; Q_c(s, a) = −5 for both twins, so the cost loss is
    # 2 · (−5 − y_c)² = 72 (floor) or 2 · 1.05² = 2.205.
    _, metrics = oracle.critic_loss(state.critic, state, b, jax.random.PRNGKey(1))
    np.testing.assert_allclose(metrics["loss/critic_cost"], 72.0 if floor else 2.205, rtol=1e-5)


def test_cost_floor_gives_the_actor_no_gradient_from_a_negative_cost_critic():
    """Where Q_c < 0 the floor removes the actor's incentive to push it lower: at λ = 2 the actor's gradient is the
    same whether the (negative) cost critic depends on the action or not; without the floor it is not."""
    grads = {}
    for floor in (True, False):
        oracle = TD3BC(TD3BCConfig(hidden=(8, 8), gamma=GAMMA, cost_floor=floor), OBS, ACT)
        for slope in (0.0, 1.0):
            state = with_cost_critic(oracle, -5.0, slope)
            loss = lambda actor: oracle.actor_loss(actor, state.critic, batch(), jnp.float32(2.0), 0.01)[0]
            grads[floor, slope] = jax.tree_util.tree_leaves(jax.grad(loss)(state.actor))

    def distance(a, b):
        return sum(float(jnp.abs(x - y).sum()) for x, y in zip(a, b))

    assert distance(grads[True, 0.0], grads[True, 1.0]) == 0.0
    assert distance(grads[False, 0.0], grads[False, 1.0]) > 1e-3


def test_critic_layer_norm_normalises_every_hidden_layer_and_trains():
    plain = TD3BC(TD3BCConfig(hidden=(8, 8), critic_layer_norm=False), OBS, ACT)
    normed = TD3BC(TD3BCConfig(hidden=(8, 8)), OBS, ACT)  # on by default
    p_plain = plain.init(jax.random.PRNGKey(0)).critic["reward"]["params"]["VmapMLP_0"]
    state = normed.init(jax.random.PRNGKey(0))
    p_normed = state.critic["reward"]["params"]["VmapMLP_0"]
    assert sorted(p_plain) == ["Dense_0", "Dense_1", "Dense_2"]  # unchanged layout when off (old checkpoints load)
    assert sorted(p_normed) == ["Dense_0", "Dense_1", "Dense_2", "LayerNorm_0", "LayerNorm_1"]
    assert p_normed["LayerNorm_0"]["scale"].shape == (2, 8)  # one per twin
    # LayerNorm bounds the last hidden layer's features (norm √width after ReLU at most), so a critic's output is
    # bounded by its output layer: |Q| ≤ |w|·√8 + |b| wherever the input goes, unlike a plain MLP.
    far = 1e4 * jnp.ones((1, OBS))
    q_far = normed.critic.apply(state.critic["reward"], far, jnp.zeros((1, ACT)))
    w = p_normed["Dense_2"]["kernel"][..., 0]
    bound = jnp.linalg.norm(w, axis=-1) * np.sqrt(8) + jnp.abs(p_normed["Dense_2"]["bias"][..., 0])
    assert np.all(np.abs(np.asarray(q_far[:, 0])) <= np.asarray(bound) + 1e-4)
    new_state, metrics = normed.update(state, batch(), jnp.array(1.0), 0.1, jax.random.PRNGKey(2))
    assert all(np.isfinite(float(v)) for v in metrics.values() if not np.isnan(float(v)))
    assert int(new_state.step) == 1


def test_twin_critic_loss_by_hand():
    """The Bellman error TD3+BC, BCQ-Lag and BEAR-Lag share (o3srl.algos.base.twin_critic_loss), on two transitions:
    y_r = 0.1 r + 0.9 (1 − terminal) next_r, y_c = c + 0.9 (1 − terminal) next_c; a terminal cuts the bootstrap."""
    b = Batch(
        obs=jnp.zeros((2, 1)),
        actions=jnp.zeros((2, 1)),
        rewards=jnp.array([10.0, 20.0]),
        costs=jnp.array([1.0, 0.0]),
        next_obs=jnp.zeros((2, 1)),
        terminals=jnp.array([0.0, 1.0]),
    )
    q_r = jnp.array([[3.0, 2.0], [2.0, 1.0]])  # twins × batch
    q_c = jnp.array([[1.0, 0.0], [0.0, 0.0]])
    loss, m = twin_critic_loss(q_r, q_c, b, jnp.array([2.0, 5.0]), jnp.array([1.0, 7.0]), 0.1, 1.0, 0.9)
    # y_r = (1 + 1.8, 2) = (2.8, 2); twin 1: ((0.2)² + 0²) / 2 = 0.02; twin 2: ((−0.8)² + (−1)²) / 2 = 0.82
    # y_c = (1 + 0.9, 0) = (1.9, 0); twin 1: ((−0.9)² + 0) / 2 = 0.405; twin 2: ((−1.9)² + 0) / 2 = 1.805
    np.testing.assert_allclose(m["loss/critic_reward"], 0.84, rtol=1e-6)
    np.testing.assert_allclose(m["loss/critic_cost"], 2.21, rtol=1e-6)
    np.testing.assert_allclose(loss, 3.05, rtol=1e-6)
    np.testing.assert_allclose(m["q/reward"], 2.0)
    np.testing.assert_allclose(m["q/cost"], 0.25)
