"""The chain engine: one chain on disk and in time (storage, locks, plans, scheduling, the loop)."""
