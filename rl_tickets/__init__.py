"""rl_tickets: lottery tickets for deep reinforcement learning."""

__version__ = "0.1.0"
