"""Sparsity: masks (the invariant), pruning scores and top-k, gradual schedules, controls, supermasks."""
