"""Writing one level: train (or evaluate) it into ``<level>.partial``, record it, then move it in.

A finished level holds its mask (``mask.pt``), ``metrics.json`` (the trainer's metrics, where the
time went, what the level started from), its evaluation curve, under sparse training its mask
updates (``mask_updates.csv``) and, last, the COMPLETE manifest.
Each level's metrics.json records where its time went (``time``: train, eval, save, prune, total
seconds) and ``steps_per_s`` (training alone); levels.csv carries ``train_s``.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rl_tickets.chain.context import ChainContext
from rl_tickets.chain.manifest import write_complete
from rl_tickets.chain.store import PublishRefused, fresh_partial, write_csv
from rl_tickets.level import CurveSink, LevelOutcome, LevelPlan
from rl_tickets.sparsity.dynamic import LOG_COLUMNS
from rl_tickets.sparsity.masks import Mask, layer_densities, save_mask
from rl_tickets.timing import TIME_KEYS, Stopwatch, steps_per_second

log = logging.getLogger(__name__)

# Sparse training's log of mask updates in a level directory (rl_tickets.sparsity.dynamic.LOG_COLUMNS).
MASK_UPDATES = "mask_updates.csv"
# Builds a level's curve sink from (offset, start_step): the cumulative x-axis of its curves.
SinkMaker = Callable[[int, int], CurveSink]


def train_level(
    chain: ChainContext, level: int, variant: str, make_plan: Callable[[], LevelPlan], make_sink: SinkMaker
) -> None:
    """Train one level of one variant; write it atomically.

    :param chain: the chain.
    :param level: level number.
    :param variant: ticket, a control, ``transfer`` or ``gradual``.
    :param make_plan: builds the level's plan (timed as ``prune``).
    :param make_sink: the curve sink for this level's (offset, start step).
    """
    final = chain.paths.level(level, variant)
    partial_dir = fresh_partial(final)
    watch = Stopwatch()
    started = watch.clock()
    with watch.section("prune"):
        plan = make_plan()
    offset = chain.offset(level, variant)
    start_step = plan.start_step if plan.start_step is not None else chain.checkpoint_step(plan.start)
    outcome = chain.trainer.train(plan, partial_dir, make_sink(offset, start_step))
    mask = outcome.mask if outcome.mask is not None else (plan.mask or chain.dense_mask(plan.width_scale))
    if plan.sparse is not None:  # sparse training: the trainer updated the schedule's mask in place
        mask = plan.sparse.mask
    with watch.section("save"):
        save_mask(mask, partial_dir / "mask.pt")
    finish_level(
        chain, partial_dir, final, level, variant, plan, outcome, mask, watch, watch.clock() - started
    )


def finish_level(
    chain: ChainContext,
    partial: Path,
    final: Path,
    level: int,
    variant: str,
    plan: LevelPlan,
    outcome: LevelOutcome,
    mask: Mask,
    watch: Stopwatch,
    total_s: float,
) -> None:
    """Write metrics and curve (mask.pt is written), then COMPLETE, then move the level into place.

    :param chain: the chain.
    :param partial: the level's ``.partial`` directory.
    :param final: the level's final directory.
    :param level: level number.
    :param variant: the variant.
    :param plan: what the level started from.
    :param outcome: what its training returned.
    :param mask: its mask (already saved).
    :param watch: the engine's own sections of this level (``prune``; ``save`` of the mask).
    :param total_s: seconds from the start of the level's preparation to its mask on disk.
    """
    spent = {
        key: round(outcome.time.get(key, 0.0) + watch.seconds(key.removesuffix("_s")), 4) for key in TIME_KEYS
    }
    spent["total_s"] = round(total_s, 4)
    steps = int(outcome.metrics.get(chain.trainer.unit, 0) or 0)
    empty = [layer for layer, _, layer_density in layer_densities(mask) if layer_density == 0]
    if empty:
        # Never silent: a layer without a live weight cuts the network (its outputs are constant).
        log.warning(
            f"rl-tickets: warning: level {level} {variant} has no live weights in {', '.join(empty)} "
            f"(prune.min_layer_density={chain.cfg.prune.min_layer_density}); the network is cut there"
        )
    record = {
        "level": level,
        "variant": variant,
        "density": chain.density(mask),
        "empty_layers": empty,
        **outcome.metrics,
        "time": spent,
        "steps_per_s": steps_per_second(steps, spent["train_s"]),
        "extra": outcome.extra,
        "plan": describe(plan),
        "eval": asdict(chain.cfg.eval),  # what this level was evaluated with (meta.json's are per run)
    }
    (partial / "metrics.json").write_text(json.dumps(record, indent=2, default=str))
    if outcome.curve:
        columns = sorted({k for row in outcome.curve for k in row}, key=lambda k: (k != "step", k))
        write_csv(partial / "eval_curve.csv", outcome.curve, columns)
    if plan.sparse is not None:  # sparse training: every mask update, per layer (static: none)
        write_csv(partial / MASK_UPDATES, plan.sparse.log, list(LOG_COLUMNS))
    write_complete(partial, chain.upstream(level, variant))
    if not chain.may_publish(final):  # the lock was lost (e.g. a worker's parent died): never publish
        raise PublishRefused(
            f"level {level} {variant} was not moved into place: this run no longer holds the lock on "
            f"{final.parent.parent}; it stays in {partial} (the next run trains it again)"
        )
    shutil.rmtree(final, ignore_errors=True)
    partial.replace(final)


def describe(plan: LevelPlan) -> dict[str, Any]:
    """A plan as JSON-friendly facts (what a level started from), recorded in metrics.json.

    :param plan: the level's plan.
    """
    return {
        "start": str(plan.start) if plan.start else None,
        "start_step": plan.start_step,
        "steps": plan.steps,
        "seed": plan.seed,
        "constant_lr": plan.constant_lr,
        "hold_step": plan.hold_step,
        "restore_optimizer": plan.restore_optimizer,
        "restore_replay_buffer": plan.restore_replay_buffer,
        "width_scale": plan.width_scale,
        "params_overridden": plan.params is not None,
        **plan.record,
    }
