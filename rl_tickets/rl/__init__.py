"""The Stable-Baselines3 side: mask-aware policies, environments, the SB3 trainer, vectorised evaluation."""
