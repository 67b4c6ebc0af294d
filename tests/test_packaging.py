"""The package is citable and installable as a library: the wheel ships py.typed, the launcher configs
and the licence (ours and rl-baselines3-zoo's notice for conf/zoo), its metadata carries the SPDX
licence and classifiers, and CITATION.cff and the changelog name the version pyproject declares."""

from __future__ import annotations

import email
import zipfile
from pathlib import Path

import pytest
import yaml

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.fixture(scope="module")
def wheel(built_wheel: Path) -> zipfile.ZipFile:
    """The wheel pip builds from this checkout (tests/conftest.py)."""
    return zipfile.ZipFile(built_wheel)


def test_the_wheel_ships_type_hints_launchers_and_licences(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    assert "rl_tickets/py.typed" in names
    assert {"rl_tickets/conf/hydra/launcher/slurm.yaml", "rl_tickets/conf/hydra/launcher/local.yaml"} <= names
    (licence,) = [n for n in names if n.endswith("licenses/LICENSE")]
    text = wheel.read(licence).decode()
    assert (
        text.startswith("MIT License") and "Copyright (c) 2019 Antonin RAFFIN" in text and "conf/zoo" in text
    )


def test_the_metadata_names_licence_classifiers_and_version(wheel: zipfile.ZipFile) -> None:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    meta = email.message_from_bytes(wheel.read(name))
    assert meta["License-Expression"] == "MIT"
    assert meta["Version"] == PYPROJECT["version"]
    classifiers = meta.get_all("Classifier")
    assert "Typing :: Typed" in classifiers and "Intended Audience :: Science/Research" in classifiers


def test_citation_and_changelog_match_the_version() -> None:
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["license"] == "MIT"
    assert citation["version"] == PYPROJECT["version"]
    assert citation["title"] and citation["authors"] and citation["message"]
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{PYPROJECT['version']}] - " in changelog and "## [Unreleased]" in changelog
