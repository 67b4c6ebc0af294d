"""Instability analysis (Frankle, Dziugaite, Roy & Carbin 2020, "Linear Mode Connectivity and the
Lottery Ticket Hypothesis"): is a network, dense or sparse, stable to the noise of training from a
rewind step k? Two copies train from the state at k with different noise seeds; the metric is
evaluated along the straight line between their final weights.

- :mod:`.settings`: what an analysis is (its grid, alphas, seeds, checks) and its configs;
- :mod:`.store`: its identity, directories, pair records;
- :mod:`.interpolation`: weights and normalisation statistics along the line;
- :mod:`.evaluators`: the metric at every point of the line (RL returns, supervised test error and loss);
- :mod:`.pairs`: training one pair of copies and evaluating its path;
- :mod:`.analysis`: the loop over rewind steps and levels (resumable, content-addressed);
- :mod:`.tables`: ``stability.csv`` and ``instability.csv``;
- :mod:`.choose`: the rewind step chosen from the evidence (``rewind.auto=true``);
- :mod:`.figures`: the figures and the report's section.
"""
