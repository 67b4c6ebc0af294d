"""What every part of the engine knows about one chain: its config, trainer, paths and network.

One :class:`ChainContext` per chain and process; the plans, the level writer, the tables and the
loop read the chain's finished levels and its network's shape through it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rl_tickets.chain.manifest import upstream_key
from rl_tickets.chain.store import TICKET, ChainPaths, is_complete
from rl_tickets.config import Config
from rl_tickets.level import Trainer, bisect_scale
from rl_tickets.sparsity.masks import Mask, dense_mask
from rl_tickets.sparsity.pruning import PruneSpec, prunable


class ChainContext:
    """One chain (one seed) of one config with one trainer: its paths, pruning spec and network facts."""

    def __init__(self, cfg: Config, trainer: Trainer) -> None:
        """:param cfg: the validated job config.
        :param trainer: the RL or supervised trainer."""
        self.cfg, self.trainer = cfg, trainer
        self.paths = ChainPaths.of(cfg)
        self.spec = PruneSpec(
            rate=cfg.prune.rate,
            scope=cfg.prune.scope,
            overrides=dict(cfg.prune.overrides),
            exclude=tuple(cfg.prune.exclude),
            criterion=cfg.prune.criterion,
            distribution=cfg.prune.distribution,
            min_layer_density=cfg.prune.min_layer_density,
        )
        self._names: list[str] | None = None
        self._dense_masks: dict[float, Mask] = {}
        # Asked with a level's final directory right before the level is moved into place: whether this
        # run (or a worker's parent) still holds the lock on it. The runner sets it; alone, always yes.
        self.may_publish: Callable[[Path], bool] = lambda final: True

    @property
    def dense_dir(self) -> Path:
        """The finished dense level, which also holds its snapshots (init, rewind)."""
        return self.paths.level(0, TICKET)

    def metrics(self, level: int, variant: str) -> dict[str, Any]:
        """A finished level's metrics.json.

        :param level: level number.
        :param variant: ticket or a control name.
        """
        return json.loads((self.paths.level(level, variant) / "metrics.json").read_text())

    def upstream(self, level: int, variant: str) -> Path | None:
        """The level directory (level, variant) is built from (:func:`rl_tickets.chain.manifest.upstream_key`).

        :param level: level number.
        :param variant: ticket or a control name.
        """
        key = upstream_key(level, variant)
        return self.paths.level(*key) if key is not None else None

    def prunable_names(self) -> list[str]:
        """Names the masks cover (weights; biases too with prune.biases)."""
        if self._names is None:
            params = self.trainer.fresh_params(self.cfg.seed)
            self._names = self.trainer.prunable(params, self.cfg.prune.biases)
        return self._names

    def dense_mask(self, width_scale: float = 1.0) -> Mask:
        """All-kept mask over the prunable names (of a width-scaled network for small_dense).

        :param width_scale: hidden-width factor.
        """
        if width_scale not in self._dense_masks:
            params = self.trainer.fresh_params(self.cfg.seed, width_scale)
            self._dense_masks[width_scale] = dense_mask({n: params[n] for n in self.prunable_names()})
        return {n: m.clone() for n, m in self._dense_masks[width_scale].items()}

    def counted(self, mask: Mask) -> Mask:
        """The part of a mask that counts towards density (excluded layers are not prunable).

        :param mask: a mask over the prunable names.
        """
        return {n: mask[n] for n in prunable(list(mask), self.spec.exclude)}

    def density(self, mask: Mask) -> float:
        """Kept counted weights over the *full* network's counted weights (so a shrunk small_dense
        network sits at the density of the ticket it is matched to).

        :param mask: a level's mask.
        """
        kept = sum(int(m.sum()) for m in self.counted(mask).values())
        total = sum(m.numel() for m in self.counted(self.dense_mask()).values())
        return kept / total

    def small_dense_scale(self, n_weights: int) -> float:
        """The small_dense control's width factor: its dense network has about ``n_weights`` weights
        counted exactly as density counts them (biases with prune.biases, excluded layers left out;
        hidden widths and CNN channels shrink together).

        :param n_weights: the ticket's kept count.
        """
        counted = prunable(self.prunable_names(), self.spec.exclude)

        def count(scale: float) -> int:
            params = self.trainer.fresh_params(self.cfg.seed, scale)
            return sum(params[n].numel() for n in counted)

        return bisect_scale(count, n_weights)

    def rewind_point(self) -> tuple[Path, int]:
        """The saved state at rewind.step and the step it was actually taken at."""
        k = self.cfg.rewind.step
        taken = self.metrics(0, TICKET)["extra"].get("snapshot_step", k) if k else 0
        return self.trainer.snapshot_path(self.dense_dir, k), int(taken)

    def checkpoint_step(self, start: Path | None) -> int:
        """The step counter a plan starts at when it keeps its checkpoint's counter.

        :param start: the plan's starting checkpoint (None: a fresh network).
        """
        if start is None:
            return 0
        if start == self.trainer.snapshot_path(self.dense_dir, self.cfg.rewind.step):
            return self.rewind_point()[1]
        return int(json.loads((start.parent / "metrics.json").read_text())["extra"].get("end_step", 0))

    def offset(self, level: int, variant: str) -> int:
        """Steps this variant trained in earlier levels (the cumulative x-axis of its curves).

        :param level: level number.
        :param variant: ticket or a control name.
        """
        total = 0
        for earlier in range(level):
            which = TICKET if earlier == 0 else variant
            if is_complete(self.paths.level(earlier, which)):
                record = self.metrics(earlier, which)
                total += int(record.get(self.trainer.unit, record.get("timesteps", 0)))
        return total
