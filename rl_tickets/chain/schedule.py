"""The task graph of a chain: every (level, variant) after the dense level and what each needs first."""

from __future__ import annotations

from rl_tickets.chain.context import ChainContext
from rl_tickets.chain.plans import transfer_mask_path
from rl_tickets.chain.store import TICKET, TRANSFER
from rl_tickets.chain.workers import Task
from rl_tickets.config import ONE_RUN_SCHEDULES


def chain_tasks(chain: ChainContext) -> list[Task]:
    """Every (level, variant) after the dense level, in serial order, with what each needs first.

    The ticket at L needs the ticket at L-1. Every other variant at L needs only the ticket's *mask*
    at L, which the trained ticket at L-1 decides (:func:`rl_tickets.chain.plans.mask_of_ticket`), so
    it can train beside the ticket at L; and, so that its curves and W&B steps stay in order, its own
    level L-1.

    :param chain: the chain.
    """
    cfg = chain.cfg
    # A control listed twice is one level: two tasks would train it at once into one .partial directory.
    controls = list(dict.fromkeys(cfg.controls))
    if cfg.prune.schedule in ONE_RUN_SCHEDULES:  # one run (level 1); prune.levels=0: only the dense net
        # small_dense (the only control here) is matched to the schedule's target count, not its run.
        runs = [cfg.prune.schedule, *controls] if cfg.prune.levels else []
        return [Task((1, variant)) for variant in runs]
    tasks = []
    for level in range(1, cfg.prune.levels + 1):
        tasks.append(Task((level, TICKET), after=((level - 1, TICKET),)))
        transfer = [TRANSFER] if cfg.transfer_from and transfer_mask_path(chain, level).exists() else []
        for variant in [*controls, *transfer]:
            tasks.append(Task((level, variant), after=((level - 1, TICKET), (level - 1, variant))))
    return tasks
