"""Network building blocks shared by the oracles (Flax linen)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLP(nn.Module):
    """A ReLU multilayer perceptron with a linear output layer (optionally LayerNorm before each ReLU, as ReBRAC's
    critics: it bounds the features, which keeps a critic from extrapolating without limit)."""

    hidden: Sequence[int]
    out_dim: int
    layer_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.hidden:
            x = nn.Dense(width)(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
            x = nn.relu(x)
        return nn.Dense(self.out_dim)(x)


class Actor(nn.Module):
    """Deterministic policy with actions squashed into [−1, 1] (the oracles work in normalised action space)."""

    hidden: Sequence[int]
    act_dim: int

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        return jnp.tanh(MLP(self.hidden, self.act_dim)(obs))


class GaussianActor(nn.Module):
    """State-independent-variance Gaussian policy with a tanh-squashed mean (IQL's actor)."""

    hidden: Sequence[int]
    act_dim: int
    log_std_min: float = -5.0
    log_std_max: float = 2.0

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        mean = jnp.tanh(MLP(self.hidden, self.act_dim)(obs))
        log_std = self.param("log_std", nn.initializers.zeros, (self.act_dim,))
        return mean, jnp.clip(log_std, self.log_std_min, self.log_std_max)


class Critics(nn.Module):
    """``num`` independent Q-networks evaluated together: returns shape (num, batch)."""

    hidden: Sequence[int]
    num: int = 2
    layer_norm: bool = False

    @nn.compact
    def __call__(self, obs: jax.Array, act: jax.Array) -> jax.Array:
        ensemble = nn.vmap(
            MLP,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=0,
            axis_size=self.num,
        )
        return ensemble(self.hidden, 1, self.layer_norm)(jnp.concatenate([obs, act], axis=-1))[..., 0]


class ValueNet(nn.Module):
    """A state-value network V(s): returns shape (batch,)."""

    hidden: Sequence[int]

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        return MLP(self.hidden, 1)(obs)[..., 0]
