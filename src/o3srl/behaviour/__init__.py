"""Behaviour policies that make DSRL-like datasets: PPO-Lagrangian training and the committed zoo."""
