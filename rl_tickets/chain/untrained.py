"""Untrained kinds of level: masks evaluated on drawn weights, never trained (supermask controls).

The draw settings are recorded in metrics.json; a finished level drawn with other settings is
evaluated again (nothing trained is lost, and it costs only evaluation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict

import torch

from rl_tickets.chain.context import ChainContext
from rl_tickets.chain.levels import finish_level
from rl_tickets.chain.plans import mask_of_ticket, ticket_base
from rl_tickets.chain.store import fresh_partial
from rl_tickets.level import LevelOutcome, LevelPlan
from rl_tickets.seeds import seed_for
from rl_tickets.sparsity.controls import random_mask_like
from rl_tickets.sparsity.masks import save_mask
from rl_tickets.sparsity.supermask import SUPERMASK_CONTROLS, DrawSpec, draw_params, draw_summary
from rl_tickets.timing import Stopwatch


def supermask_level(chain: ChainContext, level: int, variant: str) -> None:
    """A supermask control: ``supermask.samples`` weight draws under a mask, evaluated, never trained.

    :param chain: the chain.
    :param level: level number (>= 1).
    :param variant: ``supermask`` (the ticket's mask) or ``random_supermask`` (a random mask with the
        ticket's per-layer counts).
    """
    cfg, trainer = chain.cfg, chain.trainer
    final = chain.paths.level(level, variant)
    watch = Stopwatch()
    started = watch.clock()
    with watch.section("prune"):
        ticket_mask = mask_of_ticket(chain, level)
        start_checkpoint = ticket_base(chain, level).start
        assert start_checkpoint is not None
        start = trainer.load_params(start_checkpoint)
        mask = ticket_mask
        if variant == "random_supermask":
            generator = torch.Generator().manual_seed(seed_for(cfg.seed, level, variant))
            mask = random_mask_like(ticket_mask, generator)
        spec = DrawSpec(cfg.supermask.weights, cfg.supermask.signs)
        draws = []
        # Draw d has one seed for both variants, so supermask and random_supermask are paired draw by draw.
        for draw in range(cfg.supermask.samples):
            draw_seed = seed_for(cfg.seed, level, "supermask", draw)
            params = draw_params(spec, draw, mask, start, trainer.fresh_params(draw_seed))
            with watch.section("eval"):
                value = trainer.evaluate_params(params, mask, start_checkpoint)
            draws.append({"draw": draw, "seed": draw_seed, trainer.metric: value})
    summary = draw_summary([d[trainer.metric] for d in draws])
    outcome = LevelOutcome(
        metrics=trainer.untrained_row(summary["mean"], summary["std"], summary["max"]),
        extra={"supermask": asdict(cfg.supermask), "draws": draws},
    )
    plan = LevelPlan(start=start_checkpoint, steps=0, mask=mask, seed=seed_for(cfg.seed, level, variant))
    partial_dir = fresh_partial(final)
    with watch.section("save"):
        save_mask(mask, partial_dir / "mask.pt")
    finish_level(
        chain, partial_dir, final, level, variant, plan, outcome, mask, watch, watch.clock() - started
    )


def is_stale(chain: ChainContext, level: int, variant: str) -> bool:
    """Whether a finished untrained level was drawn with other settings than this config's.

    :param chain: the chain.
    :param level: level number.
    :param variant: an untrained variant.
    """
    return chain.metrics(level, variant)["extra"].get("supermask") != asdict(chain.cfg.supermask)


# Untrained kinds of level: variant -> the function that evaluates and writes it.
UNTRAINED: dict[str, Callable[[ChainContext, int, str], None]] = {
    control: supermask_level for control in SUPERMASK_CONTROLS
}
