"""Which config keys belong to which task, so that what a user reads (``--help``, ``wandb.config``)
shows only the chosen task's sections: an RL run never shows ``model``/``data``, a supervised one
never ``algo``/``env``.

The schema keeps every section for every task (Hydra composes one :class:`~rl_tickets.config.Config`);
this module only decides what is *shown*.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

# Dotted keys of the *other* task, hidden from a task's views: a whole section or one field of it.
OTHER_TASK_KEYS: dict[str, tuple[str, ...]] = {
    "rl": ("model", "data", "train.iterations", "train.batch_size", "train.lr", "train.optimizer"),
    "supervised": ("algo", "env", "train.timesteps"),
}
# Config groups (conf/<group>/) that only make sense for the other task.
OTHER_TASK_GROUPS: dict[str, tuple[str, ...]] = {
    "rl": ("model", "data"),
    "supervised": ("algo", "env", "zoo"),
}


def for_task(config: Mapping[str, Any], task: str) -> dict[str, Any]:
    """A deep copy of a plain config dict without the other task's keys.

    :param config: the config as nested dicts (``dataclasses.asdict`` or ``OmegaConf.to_container``).
    :param task: ``rl`` or ``supervised``; an unknown task hides nothing.
    :return: the task's view of the config.
    """
    view = copy.deepcopy(dict(config))
    for key in OTHER_TASK_KEYS.get(task, ()):
        section, _, field = key.partition(".")
        if not field:
            view.pop(section, None)
        elif isinstance(view.get(section), dict):
            view[section].pop(field, None)
    return view
