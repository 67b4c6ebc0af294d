"""One pair: two copies trained from the state at rewind step k with the same mask and different noise,
then the metric along the line between their final weights.

The copies share everything but their noise seed (environment seeds, action sampling, minibatch
order): the start state at k, the mask, the step counter (so every schedule continues from k), and the
chain's rewinding settings (``rewind.optimizer``, ``rewind.replay_buffer``). Both train to the end of
the budget. A pair is written into ``<pair>.partial`` and renamed once both copies and ``pair.json``
are written, COMPLETE last (a killed analysis loses at most the pair in progress); its path is
evaluated afterwards into ``path.json``, which a rerun rewrites when the alphas or the evaluation
settings changed, without training again.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rl_tickets.chain.manifest import write_complete
from rl_tickets.chain.store import fresh_partial, write_atomic
from rl_tickets.level import LevelPlan, Trainer
from rl_tickets.sparsity.masks import Mask, save_mask
from rl_tickets.stability.interpolation import barrier, instability
from rl_tickets.stability.points import PathEvaluator
from rl_tickets.stability.settings import COPIES
from rl_tickets.stability.store import PAIR_RECORD, PATH_RECORD, read_json


@dataclass(frozen=True)
class PairSpec:
    """What both copies of a pair start from.

    :param k: the rewind step the start state was taken at (the copies' step counter).
    :param level: the chain level of the mask (0: dense, no mask).
    :param start: the dense run's snapshot at k.
    :param mask: the level's ticket mask (None for the dense level).
    :param mask_sha256: digest of the mask's file (a pair is stale when its mask was retrained).
    :param density: the level's density, as the chain counts it.
    :param seeds: the two copies' noise seeds.
    :param restore_optimizer: keep the optimizer moments at k (``rewind.optimizer=restore``).
    :param restore_replay_buffer: load the replay buffer at k (``rewind.replay_buffer=restore``).
    """

    k: int
    level: int
    start: Path
    mask: Mask | None
    mask_sha256: str | None
    density: float
    seeds: tuple[int, int]
    restore_optimizer: bool = False
    restore_replay_buffer: bool = False

    def record(self) -> dict[str, Any]:
        """The spec as JSON-friendly facts (pair.json), the mask itself left out."""
        facts = asdict(self)
        facts.pop("mask")
        facts["start"] = str(self.start)
        facts["seeds"] = dict(zip(COPIES, self.seeds, strict=True))
        return facts


def copy_plan(trainer: Trainer, spec: PairSpec, seed: int) -> LevelPlan:
    """One copy's plan: the state at k, the mask, its own noise seed, to the end of the budget.

    :param trainer: the analysis's trainer.
    :param spec: the pair.
    :param seed: the copy's noise seed.
    """
    return LevelPlan(
        start=spec.start,
        steps=trainer.budget - spec.k,
        mask=spec.mask,
        seed=seed,
        restore_optimizer=spec.restore_optimizer,
        restore_replay_buffer=spec.restore_replay_buffer,
    )


def train_pair(trainer: Trainer, spec: PairSpec, final: Path, upstream: Path) -> dict[str, Any]:
    """Train both copies of a pair and write the pair atomically.

    :param trainer: the analysis's trainer.
    :param spec: the pair.
    :param final: the pair's directory.
    :param upstream: the analysis's dense run (recorded in COMPLETE: a retrained dense run makes the pair stale).
    :return: the pair's record (pair.json).
    """
    partial = fresh_partial(final)
    copies = {}
    for copy, seed in zip(COPIES, spec.seeds, strict=True):
        out = partial / copy
        out.mkdir()
        outcome = trainer.train(copy_plan(trainer, spec, seed), out)
        facts = {"metrics": outcome.metrics, "extra": outcome.extra, "time": outcome.time}
        (out / "metrics.json").write_text(json.dumps(facts, indent=2, default=str))
        copies[copy] = facts
    if spec.mask is not None:
        save_mask(spec.mask, partial / "mask.pt")
    record = {**spec.record(), "copies": copies}
    (partial / PAIR_RECORD).write_text(json.dumps(record, indent=2, default=str))
    write_complete(partial, upstream)
    shutil.rmtree(final, ignore_errors=True)
    partial.replace(final)
    return record


def path_is_current(pair: Path, evaluator: PathEvaluator, alphas: list[float]) -> bool:
    """Whether the pair's path.json was evaluated with these alphas and evaluation settings.

    :param pair: the pair's directory.
    :param evaluator: the analysis's path evaluator.
    :param alphas: the interpolation weights wanted.
    """
    record = read_json(pair / PATH_RECORD)
    return record is not None and record.get("settings") == {**evaluator.settings, "alphas": alphas}


def evaluate_path(
    pair: Path, evaluator: PathEvaluator, checkpoint_name: str, mask: Mask | None, alphas: list[float]
) -> dict[str, Any]:
    """Evaluate the line between the pair's two copies and write path.json (atomically).

    :param pair: the pair's directory.
    :param evaluator: the analysis's path evaluator.
    :param checkpoint_name: the trainer's final checkpoint file name.
    :param mask: the pair's mask (applied at every point).
    :param alphas: interpolation weights, 0 and 1 included.
    :return: the record: settings, metric, points, instability and its worst point.
    """
    a, b = (pair / copy / checkpoint_name for copy in COPIES)
    points = evaluator.points(a, b, mask, alphas)
    values = [p.value for p in points]
    value, worst = instability(values, evaluator.higher_is_better)
    record = {
        "settings": {**evaluator.settings, "alphas": alphas},
        "metric": evaluator.metric,
        "higher_is_better": evaluator.higher_is_better,
        "points": [asdict(p) for p in points],
        "instability": value,
        "worst_alpha": alphas[worst],
        "barrier": barrier(values, alphas, evaluator.higher_is_better),
    }
    write_atomic(pair / PATH_RECORD, json.dumps(record, indent=1))
    return record
