"""Network building blocks shared by the oracles (Flax linen)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLP(nn.Module):
    """A multilayer perceptron (ReLU unless ``activation`` says otherwise) with a linear output layer (optionally
    LayerNorm before each activation, as ReBRAC's critics: it bounds the features, which keeps a critic from
    extrapolating without limit)."""

    hidden: Sequence[int]
    out_dim: int
    layer_norm: bool = False
    activation: Callable[[jax.Array], jax.Array] = nn.relu

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.hidden:
            x = nn.Dense(width)(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
            x = self.activation(x)
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


class VAE(nn.Module):
    """The conditional VAE of BCQ / CPQ: q(z | s, a) and a decoder D(s, z) with actions in [−1, 1]."""

    hidden: int
    act_dim: int
    latent_dim: int

    def setup(self) -> None:
        self.encoder = MLP((self.hidden, self.hidden), 2 * self.latent_dim)
        self.decoder = MLP((self.hidden, self.hidden), self.act_dim)

    def encode(self, obs: jax.Array, act: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Mean and standard deviation of q(z | s, a) (log std clipped to [−4, 15], as OSRL's)."""
        mean, log_std = jnp.split(self.encoder(jnp.concatenate([obs, act], axis=-1)), 2, axis=-1)
        return mean, jnp.exp(jnp.clip(log_std, -4.0, 15.0))

    def decode(self, obs: jax.Array, z: jax.Array) -> jax.Array:
        return jnp.tanh(self.decode_pretanh(obs, z))

    def decode_pretanh(self, obs: jax.Array, z: jax.Array) -> jax.Array:
        """The decoder's output before its tanh (BEAR's MMD compares actions there)."""
        return self.decoder(jnp.concatenate([obs, z], axis=-1))

    def __call__(self, obs: jax.Array, act: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        mean, std = self.encode(obs, act)
        z = mean + std * jax.random.normal(key, mean.shape)
        return self.decode(obs, z), mean, std


def gaussian_kl(mean: jax.Array, std: jax.Array) -> jax.Array:
    """KL(N(mean, std²) ‖ N(0, I)) per latent dimension, averaged over the last axis (OSRL's ``KL_loss``)."""
    return -0.5 * (1.0 + jnp.log(std**2) - mean**2 - std**2).mean(axis=-1)


def vae_loss(params: Any, vae: VAE, obs: jax.Array, actions: jax.Array, key: jax.Array, beta: float) -> jax.Array:
    """The VAE's loss: reconstruction error (the mean over batch and action) + β KL(q(z | s, a) ‖ N(0, I))."""
    recon, mean, std = vae.apply(params, obs, actions, key)
    return ((recon - actions) ** 2).mean() + beta * gaussian_kl(mean, std).mean()
