"""Which trainer runs a task: the one registry that the job and the engine's worker processes share."""

from __future__ import annotations

from collections.abc import Callable

from rl_tickets.config import Config
from rl_tickets.level import Trainer
from rl_tickets.seeds import seed_for


class UserError(Exception):
    """An error the user can fix (missing data, ...); printed as one line."""


# The trainers import their libraries when built, not when this module is imported: Stable-Baselines3
# and gymnasium cost about a second to import and a supervised job never needs them (and the
# reverse for the datasets' libraries).
def _rl_trainer(cfg: Config) -> Trainer:
    """The SB3 trainer for ``task=rl``."""
    from rl_tickets.rl.trainer import SB3Trainer

    return SB3Trainer(
        cfg.algo,
        cfg.env,
        cfg.train.timesteps,
        cfg.eval,
        cfg.device,
        seed_for(cfg.seed, "eval"),
        tensorboard=cfg.logger.tensorboard,
    )


def _supervised_trainer(cfg: Config) -> Trainer:
    """The supervised trainer for ``task=supervised`` (loads the data now, so missing data fails early)."""
    from rl_tickets.supervised.data import MissingDataError
    from rl_tickets.supervised.trainer import SupervisedTrainer

    try:
        return SupervisedTrainer(cfg.model, cfg.data, cfg.train, cfg.eval, cfg.device, cfg.seed)
    except MissingDataError as error:
        raise UserError(str(error)) from None


TRAINERS: dict[str, Callable[[Config], Trainer]] = {"rl": _rl_trainer, "supervised": _supervised_trainer}


def build_trainer(cfg: Config) -> Trainer:
    """The trainer for ``cfg.task`` (what the job and worker processes use unless told otherwise).

    :param cfg: the job config.
    """
    return TRAINERS[cfg.task](cfg)
