"""``rl-tickets --help``: the chosen task's config groups and sections only.

Hydra's help template lists every group and the whole config, so an RL run would show ``model`` and
``data`` (and a supervised one ``algo``, ``env``, ``zoo``). The template in ``conf/config.yaml`` calls
the two OmegaConf resolvers registered here instead; they read the composed config through
``_root_`` and hide the other task's parts (:mod:`rl_tickets.task_sections`).
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rl_tickets.task_sections import OTHER_TASK_GROUPS, for_task

GROUPS_RESOLVER = "rl_tickets_help_groups"
CONFIG_RESOLVER = "rl_tickets_help_config"


def _template_safe(text: str) -> str:
    """Escape ``$`` (Hydra fills the help template with :class:`string.Template`)."""
    return text.replace("$", "$$")


def group_options(group: str) -> list[str]:
    """The options of a config group in the packaged conf/ (``experiment``: the presets).

    :param group: a config group (a directory of conf/).
    """
    directory = files("rl_tickets.conf").joinpath(group)
    return sorted(e.name[: -len(".yaml")] for e in directory.iterdir() if e.name.endswith(".yaml"))


def config_groups(task: str) -> str:
    """``group: option, option`` lines for the config groups of ``task`` (from the packaged conf/).

    :param task: ``rl`` or ``supervised``.
    """
    conf = files("rl_tickets.conf")
    hidden = set(OTHER_TASK_GROUPS.get(task, ()))
    lines = []
    for group in sorted(entry.name for entry in conf.iterdir() if entry.is_dir()):
        options = group_options(group)
        if options and group not in hidden:
            lines.append(f"{group}: {', '.join(options)}")
    return _template_safe("\n".join(lines))


def task_config_yaml(root: DictConfig) -> str:
    """The composed config as YAML without Hydra's node and without the other task's sections.

    :param root: the whole composed config (``_root_`` of the help template).
    """
    container: Any = OmegaConf.to_container(root, resolve=False)
    container.pop("hydra", None)
    return _template_safe(OmegaConf.to_yaml(for_task(container, str(container.get("task", "rl")))))


def register_help_resolvers() -> None:
    """Register the resolvers the help template in ``conf/config.yaml`` calls (idempotent)."""
    OmegaConf.register_new_resolver(
        GROUPS_RESOLVER, lambda *, _root_: config_groups(str(_root_.get("task", "rl"))), replace=True
    )
    OmegaConf.register_new_resolver(CONFIG_RESOLVER, lambda *, _root_: task_config_yaml(_root_), replace=True)
