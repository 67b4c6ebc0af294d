"""Tracking: the W&B mirror of local files, and bounded handling of W&B server outages."""
