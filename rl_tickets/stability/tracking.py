"""The instability analysis's W&B runs: one per analysed level and seed, as chains have one per variant.

A run is named ``<experiment>/stability-L<level>/s<seed>`` in the experiment's group, tagged like the
chain's runs plus ``task:stability``; each finished pair logs ``stability/instability``,
``stability/barrier``, ``stability/ends_mean``, ``stability/worst``, ``stability/k_fraction`` and
``stability/density`` against ``global_step`` = the rewind step k (so W&B draws instability against k). ``wandb.config`` holds the
analysed task's config, the analysis hash and its results directory. Local files stay the record.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from rl_tickets.config import Config, display_name
from rl_tickets.stability.settings import learner_config
from rl_tickets.stability.store import StabilityPaths
from rl_tickets.task_sections import for_task
from rl_tickets.tracking.mirror import RunInfo, WandbMirror, job_tags


def stability_mirror(cfg: Config) -> WandbMirror:
    """The W&B mirror of one seed of an analysis (opens nothing until a pair is logged).

    :param cfg: the ``task=stability`` config.
    """
    paths, learner = StabilityPaths.of(cfg), learner_config(cfg)
    config = {
        **for_task(asdict(cfg), learner.task),
        "stability_hash": paths.analysis.name,
        "results": str(paths.seed_dir.resolve()),
    }
    tags = (*job_tags(learner), "task:stability")
    info = RunInfo(display_name(cfg), cfg.seed, paths.analysis.name, config, tags)
    return WandbMirror(cfg.logger, info, directory=Path(cfg.root))
