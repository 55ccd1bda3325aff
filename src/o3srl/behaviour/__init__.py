"""Making DSRL-like datasets: behaviour policies (PPO-Lagrangian training and the committed zoo), collection from
the zoo (``o3srl data make``) and the built-in task's scripted data."""
