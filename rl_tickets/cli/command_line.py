"""The command line before Hydra parses it, and Hydra's own errors after.

- ``prune.overrides={action_net: 0.1}`` as the README writes it: the schema types the node as
  ``dict[str, float]``, and Hydra puts it in struct mode, so plain assignment refuses every new key
  ("Key 'action_net' is not in struct"), whatever the value type. It is rewritten to
  ``++prune.overrides=...``, which *merges* the given patterns into the preset's: a pattern given
  again gets the new rate, the preset's other patterns stay.
- A value with non-ASCII text (``root=/data/Müller``, ``name=ppo_ü``) is quoted: Hydra's override
  lexer takes such text only inside quotes, and otherwise fails with ``LexerNoViableAltException``.
- Checked before Hydra starts, because Hydra acts on them first: the results root (Hydra creates
  ``${root}/hydra/...`` before the app runs, and fails with a traceback on a file or a read-only
  directory) and ``experiment=`` (Hydra skips an unknown *optional* preset without a word).
- Hydra's own errors (an unknown group option or key, a wrong type, bad override syntax) print
  5-13 lines and exit 1; :func:`hydra_raises` has Hydra raise them instead, and :func:`one_line`
  makes one line of each, which the entry point prints with exit status 2. ``HYDRA_FULL_ERROR=1``
  (set by the user) keeps Hydra's full output.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from rl_tickets.cli.help import group_options
from rl_tickets.cli.preflight import check_root
from rl_tickets.config import Config, ConfigError

MERGED = ("prune.overrides",)
# A value holding any of these is Hydra syntax (quotes, lists, dicts, sweeps): it is never quoted for it.
UNQUOTABLE = set("'\"[]{}(),")  # dict-typed keys whose command-line value merges into the preset's
PRESETS = "experiment"
# Hydra flags that only show something: they need no writable root.
INSPECTING = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc"}
# Lines of Hydra's messages that are noise in one line (or advice that does not apply here).
DROPPED = ("full_key:", "object_type=", "reference_type=", "provider=", "Set the environment", "To append to")


def _split(argument: str) -> tuple[str, str, str] | None:
    """``(prefix, key, value)`` of an override such as ``++prune.rate=0.1``; None for a flag."""
    if argument.startswith("-") or "=" not in argument:
        return None
    key, _, value = argument.partition("=")
    bare = key.lstrip("+~")
    return key[: len(key) - len(bare)], bare, value


def rewrite(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``prune.overrides=...`` turned into ``++prune.overrides=...`` and non-ASCII values
    quoted (see the module doc).

    :param argv: the arguments after the program name.
    """
    out = []
    for argument in argv:
        parts = _split(argument)
        if parts is not None and parts[1] in MERGED and parts[0] in ("", "+"):
            argument = f"++{parts[1]}={parts[2]}"
        elif parts is not None and not parts[2].isascii() and not set(parts[2]) & UNQUOTABLE:
            argument = f"{parts[0]}{parts[1]}='{parts[2]}'"
        out.append(argument)
    return out


def values_of(argv: Sequence[str], key: str) -> list[str]:
    """Every value given to ``key`` on the command line, in order.

    :param argv: the arguments after the program name.
    :param key: a dotted key or a group name.
    """
    return [
        parts[2] for a in argv if (parts := _split(a)) is not None and parts[1] == key and parts[0] != "~"
    ]


def check(argv: Sequence[str]) -> None:
    """Refuse, before Hydra starts, a root that cannot hold results and an unknown preset.

    :param argv: the arguments after the program name.
    """
    # A quoted value (rewrite() quotes non-ASCII ones) names the path inside the quotes.
    roots = [
        r[1:-1] if len(r) > 1 and r[0] == r[-1] and r[0] in "'\"" else r for r in values_of(argv, "root")
    ]
    if not INSPECTING.intersection(argv):  # --help, --cfg ... write nothing
        check_root(roots[-1] if roots else Config().root)
    known = group_options(PRESETS)
    for value in values_of(argv, PRESETS):
        if "(" in value:  # a sweep function (glob(...), choice(...)): Hydra expands and checks it
            continue
        for preset in value.split(","):  # a multirun sweeps presets with a comma
            if preset not in known and preset != "null":
                raise ConfigError(f"experiment={preset} is not a preset; choose one of: {', '.join(known)}")


@contextmanager
def hydra_raises() -> Iterator[bool]:
    """Within the block Hydra raises its errors instead of printing them (``HYDRA_FULL_ERROR``).

    :return: whether to catch them: False when the user set HYDRA_FULL_ERROR (Hydra's full output wins).
    """
    if os.environ.get("HYDRA_FULL_ERROR"):
        yield False
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield True
    finally:
        os.environ.pop("HYDRA_FULL_ERROR", None)


def one_line(error: BaseException) -> str:
    """A Hydra or OmegaConf error (and its cause) as one line: options listed with commas, no search
    path, no advice that does not apply.

    :param error: the error Hydra raised.
    """
    parts: list[str] = []
    listing = False  # after "Available options in 'algo':", one option per line follows
    for exc in (error, error.__cause__):
        for raw in str(exc or "").splitlines():
            line = raw.strip()
            if line.startswith("Config search path"):
                break
            if not line or line.startswith(DROPPED) or line in parts:
                continue
            if listing and " " not in line:
                parts[-1] += (" " if parts[-1].endswith(":") else ", ") + line
                continue
            listing = line.endswith(":")
            parts.append(line)
    text = "".join(
        p if not i else (" " if parts[i - 1].endswith(".") else "; ") + p for i, p in enumerate(parts)
    )
    if "LexerNoViableAltException" in text or "no viable alternative" in text:
        text += "; quote a value that holds spaces, quotes or brackets, e.g. key='a value'"
    return text or type(error).__name__
