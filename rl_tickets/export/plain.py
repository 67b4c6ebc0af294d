"""Plain Stable-Baselines3 checkpoints: SB3's own policy class, no mask buffers, exact weights.

A level's ``model.zip`` pickles rl_tickets' policy class by reference and carries ``weight_mask`` /
``bias_mask`` buffers, so plain SB3 can neither unpickle it nor load it strictly. Rewriting the zip's
``data`` (policy class -> its SB3 base) and ``policy`` state dict (masks dropped) fixes both; optimizer
states index parameters only, so they stay valid and training can go on from the exported file.
"""

from __future__ import annotations

import base64
import json
import zipfile
from pathlib import Path
from typing import Any

from stable_baselines3.common.save_util import data_to_json, save_to_zip_file

from rl_tickets.export.level import Level, plain_state, sb3_base

PACKAGE = "rl_tickets"


def plain_data(data: dict[str, Any]) -> dict[str, Any]:
    """Checkpoint data with the policy class replaced by its Stable-Baselines3 base class.

    :param data: SB3 data of a level checkpoint.
    """
    return {**data, "policy_class": sb3_base(data["policy_class"])}


def mentions_package(serialized: str, package: str = PACKAGE) -> list[str]:
    """The keys of SB3 JSON data whose value (pickled or not) refers to ``package``.

    Such a key makes ``<Algo>.load`` import ``package`` (e.g. rl_tickets' MinAtar CNN in policy_kwargs).

    :param serialized: the ``data`` member of an SB3 zip (``data_to_json``'s output).
    :param package: the top-level module name to look for.
    """
    needle = package.encode()
    found = []
    for key, value in json.loads(serialized).items():
        blob = json.dumps(value).encode()
        if isinstance(value, dict) and ":serialized:" in value:
            blob += base64.b64decode(value[":serialized:"])
        if needle in blob:
            found.append(key)
    return found


def foreign_keys(data: dict[str, Any]) -> list[str]:
    """The data keys that would still need rl_tickets after :func:`plain_data`.

    :param data: SB3 data of a level checkpoint.
    """
    return mentions_package(data_to_json(plain_data(data)))


def write_plain(level: Level, path: Path) -> None:
    """Write the level as a plain SB3 checkpoint (same weights, optimizer states and counters).

    :param level: the opened level.
    :param path: the ``.zip`` to write.
    """
    params = {**level.params, "policy": plain_state(level.params["policy"])}
    save_to_zip_file(path, data=plain_data(level.data), params=params, pytorch_variables=level.variables)


def zip_mentions_package(path: Path, package: str = PACKAGE) -> list[str]:
    """The data keys of a saved SB3 zip that refer to ``package`` (empty: it loads without it).

    :param path: an SB3 ``.zip``.
    :param package: the top-level module name to look for.
    """
    with zipfile.ZipFile(path) as archive:
        return mentions_package(archive.read("data").decode(), package)
