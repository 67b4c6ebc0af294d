"""What each kind of level starts from: one small plan per kind, registered in :data:`PLANS`.

A plan is a :class:`rl_tickets.level.LevelPlan` built from files on disk only (the dense level's
snapshots, the previous level's checkpoint and mask), so any level can be planned in any process.
Adding a new kind of trained level means one function here and one registry entry; the loop
(:mod:`rl_tickets.chain.runner`) does not change. Untrained kinds (supermasks) live in
:mod:`rl_tickets.chain.untrained`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from rl_tickets.chain.context import ChainContext
from rl_tickets.chain.store import TICKET, TRANSFER, is_complete
from rl_tickets.config import ONE_RUN_SCHEDULES, SPARSE_TRAINING, ConfigError, resolved_end_fraction
from rl_tickets.level import LevelPlan
from rl_tickets.seeds import seed_for
from rl_tickets.sparsity.controls import ARCHITECTURE_CONTROLS, CONTROLS, ControlInputs, build_control
from rl_tickets.sparsity.dynamic import DynamicSchedule, layer_counts, random_mask
from rl_tickets.sparsity.gradual import GradualSchedule
from rl_tickets.sparsity.masks import Mask, load_mask
from rl_tickets.sparsity.pruning import next_mask

# A plan builder: (chain, level, variant) -> what the level starts from and how it trains.
Plan = Callable[[ChainContext, int, str], LevelPlan]
DENSE = "dense"


def dense_plan(chain: ChainContext, level: int, variant: str) -> LevelPlan:
    """Level 0: a fresh network from the chain seed, snapshots at 0 and at rewind.step."""
    cfg = chain.cfg
    return LevelPlan(
        start=None,
        steps=chain.trainer.budget,
        mask=None,
        seed=cfg.seed,
        snapshot_step=cfg.rewind.step,
        restore_replay_buffer=cfg.rewind.replay_buffer == "restore",
    )


def ticket_start(chain: ChainContext, level: int) -> tuple[Path, int | None, float | None]:
    """(checkpoint, start_step, constant_lr) of the ticket per retrain.mode.

    :param chain: the chain.
    :param level: level number (>= 1).
    """
    snapshot, k = chain.rewind_point()
    previous = chain.paths.level(level - 1, TICKET) / chain.trainer.checkpoint_name
    mode = chain.cfg.retrain.mode
    if mode == "rewind":
        return snapshot, None, None
    if mode == "lr_rewind":
        return previous, k, None
    return previous, None, chain.cfg.retrain.finetune_lr


def criterion_reference(chain: ChainContext, source: int) -> Path:
    """The weights the pruned level started from: what magnitude_increase and movement compare with.

    Zhou et al. 2019 score a weight by how it changed from the weights its training started from:
    under ``rewind`` the rewind point k (every level restarts there; for the dense level too, since
    its mask decides what restarts from k); under ``finetune`` and ``lr_rewind`` the level's own
    start, the previous level's trained weights (the initialisation for the dense level). Gradual
    pruning compares with the weights at its previous mask update (:class:`GradualSchedule`).

    :param chain: the chain.
    :param source: the level whose trained weights are ranked.
    """
    if source > 0:
        return ticket_start(chain, source)[0]
    if chain.cfg.retrain.mode == "rewind":
        return chain.rewind_point()[0]
    return chain.trainer.snapshot_path(chain.dense_dir, 0)


def ticket_mask(chain: ChainContext, level: int) -> Mask:
    """Prune the previous ticket (iterative) or the dense net ``level`` times at once (oneshot).

    :param chain: the chain.
    :param level: level number (>= 1).
    """
    oneshot = chain.cfg.prune.schedule == "oneshot"
    source = 0 if oneshot else level - 1
    source_dir = chain.paths.level(source, TICKET)
    final = chain.trainer.load_params(source_dir / chain.trainer.checkpoint_name)
    reference = chain.trainer.load_params(criterion_reference(chain, source))
    current = load_mask(source_dir / "mask.pt") if source else chain.dense_mask()
    generator = torch.Generator().manual_seed(seed_for(chain.cfg.seed, level, "prune"))
    return next_mask(
        chain.spec, final, reference, current, times=level if oneshot else 1, generator=generator
    )


def mask_of_ticket(chain: ChainContext, level: int) -> Mask:
    """The ticket's mask at ``level``: read back from the finished ticket, or, while the ticket at
    ``level`` is still training (``workers``), computed as it computes it (from the ticket at
    ``level - 1``, deterministically), so the controls need not wait for its training.

    :param chain: the chain.
    :param level: level number (>= 1).
    """
    finished = chain.paths.level(level, TICKET)
    return load_mask(finished / "mask.pt") if is_complete(finished) else ticket_mask(chain, level)


def ticket_base(chain: ChainContext, level: int) -> LevelPlan:
    """The ticket's start at this level per retrain.mode, without its mask.

    :param chain: the chain.
    :param level: level number (>= 1).
    """
    start, start_step, lr = ticket_start(chain, level)
    _, k = chain.rewind_point()
    cfg = chain.cfg
    return LevelPlan(
        start=start,
        start_step=start_step,
        steps=chain.trainer.budget - k,
        mask=None,
        seed=seed_for(cfg.seed, level),
        constant_lr=lr,
        hold_step=k if lr is not None else 0,
        restore_optimizer=cfg.rewind.optimizer == "restore",
        restore_replay_buffer=cfg.rewind.replay_buffer == "restore",
    )


def ticket_plan(chain: ChainContext, level: int, variant: str) -> LevelPlan:
    """The ticket: a new mask, then restart per retrain.mode and train to the end of the budget."""
    plan = ticket_base(chain, level)
    plan.mask = ticket_mask(chain, level)
    return plan


def weight_control_plan(chain: ChainContext, level: int, variant: str) -> LevelPlan:
    """A control that changes the ticket's mask or weights (:mod:`rl_tickets.sparsity.controls`),
    against the ticket's own mask at this level."""
    cfg = chain.cfg
    control_seed = seed_for(cfg.seed, level, variant)
    plan = ticket_base(chain, level)
    assert plan.start is not None
    # random_reinit draws the very same random mask as random_mask; only its weights are fresh.
    generator_seed = seed_for(cfg.seed, level, "random_mask") if variant == "random_reinit" else control_seed
    inputs = ControlInputs(
        mask=mask_of_ticket(chain, level),
        start=chain.trainer.load_params(plan.start),
        fresh=chain.trainer.fresh_params(control_seed),
        generator=torch.Generator().manual_seed(generator_seed),
    )
    built = build_control(variant, inputs)
    plan.mask, plan.params = built.mask, built.params
    plan.record = {"control_seed": control_seed, "generator_seed": generator_seed}
    return plan


def small_dense_plan(chain: ChainContext, level: int, variant: str) -> LevelPlan:
    """A dense network shrunk to the ticket's kept weight count, trained from a fresh init (beside a
    one-run schedule: to its target count, :func:`one_run_counts`)."""
    control_seed = seed_for(chain.cfg.seed, level, variant)
    if chain.cfg.prune.schedule in ONE_RUN_SCHEDULES:
        kept = sum(one_run_counts(chain).values())
    else:
        kept = sum(int(m.sum()) for m in chain.counted(mask_of_ticket(chain, level)).values())
    return LevelPlan(
        start=None,
        steps=chain.trainer.budget,
        mask=None,
        seed=control_seed,
        width_scale=chain.small_dense_scale(kept),
        record={"control_seed": control_seed, "ticket_weights": kept},
    )


def transfer_mask_path(chain: ChainContext, level: int) -> Path:
    """The source chain's ticket mask at ``level``.

    :param chain: the chain.
    :param level: level number.
    """
    return Path(chain.cfg.transfer_from or "") / f"level_{level:02d}" / TICKET / "mask.pt"


def transfer_mask(chain: ChainContext, level: int) -> Mask:
    """Another chain's ticket mask at ``level``; its layers and shapes must equal this network's.

    :param chain: the chain.
    :param level: level number.
    """
    mask = load_mask(transfer_mask_path(chain, level))
    own = chain.dense_mask()
    if set(mask) != set(own) or any(mask[n].shape != own[n].shape for n in own):
        raise ConfigError(
            f"transfer_from={chain.cfg.transfer_from}: its masks cover other layers or shapes than this "
            "network's; transfer needs the same architecture, prune.biases and observation/action sizes"
        )
    return mask


def transfer_plan(chain: ChainContext, level: int, variant: str) -> LevelPlan:
    """Another chain's ticket mask on this chain's start state."""
    plan = ticket_base(chain, level)
    plan.mask = transfer_mask(chain, level)
    return plan


def gradual_plan(chain: ChainContext, level: int, variant: str) -> LevelPlan:
    """Gradual magnitude pruning: one run from the initialisation with a growing mask."""
    p, budget = chain.cfg.prune, chain.trainer.budget
    schedule = GradualSchedule(
        spec=chain.spec,
        names=chain.prunable_names(),
        final_density=p.final_density,
        begin=round(p.start_fraction * budget),
        end=round(resolved_end_fraction(p) * budget),
        every=p.update_every,
    )
    return LevelPlan(
        start=chain.trainer.snapshot_path(chain.dense_dir, 0),
        steps=budget,
        mask=chain.dense_mask(),
        seed=seed_for(chain.cfg.seed, level),
        start_step=0,
        mask_schedule=schedule,
        mask_schedule_every=p.update_every,
    )


def one_run_counts(chain: ChainContext) -> dict[str, int]:
    """Kept weights per counted layer at ``prune.final_density`` under ``prune.distribution``: sparse
    training's exact counts, and what a gradual run ends at (up to its per-update rounding).

    :param chain: the chain.
    """
    shapes = {n: tuple(m.shape) for n, m in chain.counted(chain.dense_mask()).items()}
    return layer_counts(shapes, chain.cfg.prune.final_density, chain.cfg.prune.distribution)


def sparse_plan(chain: ChainContext, level: int, variant: str) -> LevelPlan:
    """Sparse training (static, SET, RigL): one run from the dense run's initialisation with a random
    mask at the target density (the same mask for all three: they differ only by its updates)."""
    cfg, budget = chain.cfg, chain.trainer.budget
    counts = one_run_counts(chain)
    mask_seed = seed_for(cfg.seed, level, "sparse_mask")
    drawn = random_mask(
        {n: tuple(chain.dense_mask()[n].shape) for n in counts},
        counts,
        torch.Generator().manual_seed(mask_seed),
    )
    mask = {**chain.dense_mask(), **drawn}
    update_seed = seed_for(cfg.seed, level, variant)
    schedule = DynamicSchedule(
        method=variant,
        mask=mask,
        updated=list(counts),
        every=cfg.prune.update_every,
        end=round(resolved_end_fraction(cfg.prune) * budget),
        drop_fraction=cfg.prune.drop_fraction,
        seed=update_seed,
    )
    return LevelPlan(
        start=chain.trainer.snapshot_path(chain.dense_dir, 0),
        steps=budget,
        mask={n: m.clone() for n, m in mask.items()},
        seed=seed_for(cfg.seed, level),
        start_step=0,
        sparse=schedule,
        record={"mask_seed": mask_seed, "update_seed": update_seed},
    )


PLANS: dict[str, Plan] = {
    DENSE: dense_plan,
    TICKET: ticket_plan,
    TRANSFER: transfer_plan,
    "gradual": gradual_plan,
    **{schedule: sparse_plan for schedule in SPARSE_TRAINING},
    **{control: weight_control_plan for control in CONTROLS},
    **{control: small_dense_plan for control in ARCHITECTURE_CONTROLS},
}


def plan_of(level: int, variant: str) -> Plan:
    """The plan builder of a trained (level, variant): level 0 is the dense run.

    :param level: level number.
    :param variant: ticket, a control, ``transfer``, ``gradual``, ``static``, ``set`` or ``rigl``.
    """
    return PLANS[DENSE] if level == 0 else PLANS[variant]
