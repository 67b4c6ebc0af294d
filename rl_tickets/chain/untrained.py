"""Untrained kinds of level: masks evaluated under a weight rule, never trained (supermask controls).

The rule's settings are recorded in metrics.json; a finished level evaluated under another rule, or
with other settings of its rule, is evaluated again (nothing trained is lost, and it costs only
evaluation). Levels recorded before engine version 2 are read in today's names
(:func:`rl_tickets.sparsity.supermask.recorded_settings`: their ``init`` is today's ``resampled``).
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
from rl_tickets.sparsity.supermask import (
    SUPERMASK_CONTROLS,
    DrawSpec,
    draw_params,
    draw_summary,
    evaluations,
    recorded_settings,
    relevant,
)
from rl_tickets.timing import Stopwatch


def draw_spec(chain: ChainContext) -> DrawSpec:
    """The chain's supermask rule.

    :param chain: the chain.
    """
    sm = chain.cfg.supermask
    return DrawSpec(sm.weights, sm.signs, sm.samples, tuple(float(w) for w in sm.shared_values))


def supermask_level(chain: ChainContext, level: int, variant: str) -> None:
    """A supermask control: a mask under the weight rule's evaluations (one, or one per draw or
    shared value), never trained.

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
        spec = draw_spec(chain)
        draws = []
        for entry in evaluations(spec):
            fresh = None
            if spec.weights == "resampled":
                # Draw d has one seed for both variants: supermask and random_supermask pair draw by draw.
                entry["seed"] = seed_for(cfg.seed, level, "supermask", entry["draw"])
                fresh = trainer.fresh_params(entry["seed"])
            params = draw_params(spec, entry["draw"], mask, start, fresh)
            with watch.section("eval"):
                value = trainer.evaluate_params(params, mask, start_checkpoint)
            draws.append({**entry, "weights": spec.weights, trainer.metric: value})
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
    """Whether a finished untrained level was evaluated under another rule, or other settings of its
    rule, than this config's (settings the rule does not use do not count).

    :param chain: the chain.
    :param level: level number.
    :param variant: an untrained variant.
    """
    recorded = chain.metrics(level, variant)["extra"].get("supermask")
    if not isinstance(recorded, dict):
        return True
    return relevant(recorded_settings(recorded)) != relevant(asdict(chain.cfg.supermask))


# Untrained kinds of level: variant -> the function that evaluates and writes it.
UNTRAINED: dict[str, Callable[[ChainContext, int, str], None]] = {
    control: supermask_level for control in SUPERMASK_CONTROLS
}
