"""Reading Stable-Baselines3 zips from a results folder without running code from it.

SB3's ``load`` and ``load_from_zip_file`` cloudpickle-load every entry of the zip's ``data`` JSON that
carries ``:serialized:`` and is not given in ``custom_objects``, including entries someone added: a
crafted ``model.zip`` runs its payload on load. Here the zip is read into memory once (so it cannot
change between the check and the load), its ``data`` JSON is parsed with :mod:`json`, and every
serialized entry is either *supplied* (rebuilt from the config the run records: the policy class,
its kwargs, the spaces, the schedules, the buffer classes, the action noise) or refused with
:class:`UnsafeCheckpoint`. SB3 then loads from that same buffer with every serialized entry in
``custom_objects``, so ``json_to_data`` never unpickles; tensors (``*.pth`` members) are read with
``torch.load(weights_only=True)`` by SB3 itself.

What a level's zip records of its training *state* as pickles (the last observation, the rolling
episode buffers) is supplied empty: SB3 resets the environment of a loaded model anyway, and the
rolling episode statistics in ``progress.csv`` start afresh at each level.

Stable-Baselines3 is imported where it is used: the engine's verification of finished levels reads
zips through :func:`read_archive` for every task, and a supervised job should not pay SB3's import.
"""

from __future__ import annotations

import copy
import io
import json
import zipfile
from pathlib import Path
from typing import Any

PICKLED = ":serialized:"
# Serialized entries rebuilt from the recorded config: the value the same config gives a fresh agent.
REBUILT = (
    "policy_kwargs",
    "observation_space",
    "action_space",
    "learning_rate",
    "lr_schedule",
    "clip_range",
    "clip_range_vf",
    "exploration_schedule",
    "train_freq",
    "action_noise",
    "rollout_buffer_class",
    "replay_buffer_class",
    "rollout_buffer_kwargs",
    "replay_buffer_kwargs",
)
# Serialized training state that a loaded model resets anyway: supplied as None.
RESET = ("_last_obs", "_last_episode_starts", "_last_original_obs", "ep_info_buffer", "ep_success_buffer")
SUPPLIED = ("policy_class", *REBUILT, *RESET)


class UnreadableCheckpoint(ValueError):
    """A checkpoint in a results folder cannot be used: damaged, or holding pickles that are refused.

    :param path: the checkpoint.
    :param reason: why, in a few words.
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(str(path), reason)
        self.path, self.reason = Path(path), reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class UnsafeCheckpoint(UnreadableCheckpoint):
    """A checkpoint whose ``data`` carries a pickled entry that rl_tickets does not rebuild."""


def read_archive(path: Path) -> tuple[io.BytesIO, list[str]]:
    """The zip's bytes (in memory) and the keys of its ``data`` entries that are pickles.

    :param path: an SB3 ``.zip``.
    :raises UnreadableCheckpoint: not a zip, no ``data``, ``data`` not a JSON object.
    :raises UnsafeCheckpoint: a pickled entry outside :data:`SUPPLIED`.
    """
    try:
        buffer = io.BytesIO(path.read_bytes())
        with zipfile.ZipFile(buffer) as archive:
            entries = json.loads(archive.read("data"))
    except KeyError:
        raise UnreadableCheckpoint(path, "no data member (not an SB3 checkpoint)") from None
    except (OSError, zipfile.BadZipFile, ValueError, UnicodeDecodeError) as error:
        raise UnreadableCheckpoint(path, f"not a readable zip ({error})") from None
    if not isinstance(entries, dict):
        raise UnreadableCheckpoint(path, "its data member is not a JSON object")
    pickled = sorted(k for k, v in entries.items() if isinstance(v, dict) and PICKLED in v)
    refused = [k for k in pickled if k not in SUPPLIED]
    if refused:
        raise UnsafeCheckpoint(
            path,
            f"its data carries pickled entries rl_tickets does not rebuild ({', '.join(refused)}); "
            "refusing to unpickle them (loading them could run code)",
        )
    buffer.seek(0)
    return buffer, pickled


def supplied_objects(pickled: list[str], fresh: Any, policy_class: type) -> dict[str, Any]:
    """``custom_objects`` for SB3: every pickled entry, rebuilt from a fresh agent of the same config.

    :param pickled: the pickled keys (:func:`read_archive`).
    :param fresh: an agent built from the recorded config (its attributes are what the config gives).
    :param policy_class: the policy class to use (rl_tickets' mask-aware one, or SB3's base).
    """
    supplied: dict[str, Any] = {"policy_class": policy_class}
    for key in pickled:
        if key in REBUILT:
            # A copy: SB3 edits policy_kwargs in place, and a noise object keeps state.
            supplied[key] = copy.deepcopy(getattr(fresh, key, None))
        elif key in RESET:
            supplied[key] = None
    return supplied


def load_model(path: Path, cls: type, fresh: Any, policy_class: type, **load_kwargs: Any) -> Any:
    """``cls.load(path, **load_kwargs)`` without unpickling anything from the file.

    :param path: an SB3 ``.zip``.
    :param cls: the SB3 algorithm class.
    :param fresh: an agent built from the recorded config (:func:`supplied_objects`).
    :param policy_class: the policy class to build.
    :param load_kwargs: ``env``, ``device``, ... for ``cls.load``.
    :raises UnreadableCheckpoint: damaged, refused, or not loadable into this config's network.
    """
    buffer, pickled = read_archive(path)
    supplied = supplied_objects(pickled, fresh, policy_class)
    try:
        return cls.load(buffer, custom_objects=supplied, **load_kwargs)
    except (ValueError, KeyError, RuntimeError, TypeError, AssertionError, zipfile.BadZipFile) as error:
        text = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UnreadableCheckpoint(path, f"does not load into this config's network ({text})") from None


def read_checkpoint(
    path: Path, fresh: Any, policy_class: type, device: str = "cpu"
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """``load_from_zip_file`` (data, params, torch variables) without unpickling anything from the file.

    :param path: an SB3 ``.zip``.
    :param fresh: an agent built from the recorded config (:func:`supplied_objects`).
    :param policy_class: the policy class ``data`` names.
    :param device: where tensors go.
    """
    from stable_baselines3.common.save_util import load_from_zip_file

    buffer, pickled = read_archive(path)
    try:
        data, params, variables = load_from_zip_file(
            buffer, device=device, custom_objects=supplied_objects(pickled, fresh, policy_class)
        )
    except (ValueError, RuntimeError, zipfile.BadZipFile) as error:
        raise UnreadableCheckpoint(path, f"unreadable tensors ({error})") from None
    assert data is not None
    return data, params, variables


def read_params(path: Path, device: str = "cpu") -> dict[str, Any]:
    """The state dicts of an SB3 zip (``policy``, optimizers), never reading its ``data``.

    :param path: an SB3 ``.zip``.
    :param device: where tensors go.
    """
    from stable_baselines3.common.save_util import load_from_zip_file

    try:
        _, params, _ = load_from_zip_file(path, load_data=False, device=device)
    except (ValueError, RuntimeError, OSError, zipfile.BadZipFile) as error:
        raise UnreadableCheckpoint(path, f"unreadable tensors ({error})") from None
    if "policy" not in params:
        raise UnreadableCheckpoint(path, "no policy.pth member")
    return params
