"""The Hydra entry point (``rl-tickets`` / ``python -m rl_tickets``): compose, validate, dispatch.

Everything below this module takes plain typed objects; Hydra stays here.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from rl_tickets.cli_help import register_help_resolvers
from rl_tickets.config import Config, ConfigError, register_schemas
from rl_tickets.job import UserError, run_job


def _remove_hydra_dir(root: Path) -> None:
    """Remove this job's Hydra output directory (and now-empty parents up to ``root``) after an error."""
    try:
        output = Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        return
    shutil.rmtree(output, ignore_errors=True)
    for parent in output.parents:
        if parent == root.parent or not parent.exists() or any(parent.iterdir()):
            break
        parent.rmdir()


@hydra.main(version_base="1.3", config_path="pkg://rl_tickets.conf", config_name="config")
def app(composed: DictConfig) -> None:
    """Run one job (one chain) from a composed config; user errors exit 2 with one line.

    :param composed: the config Hydra composed from conf/ and the command line.
    """
    cfg: Config = OmegaConf.to_object(composed)  # type: ignore[assignment]
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        run_job(cfg, multirun=multirun, live=sys.stdout.isatty() and not multirun)
    except (ConfigError, UserError) as error:
        _remove_hydra_dir(Path(cfg.root))
        print(f"rl-tickets: error: {error}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    """Console entry: register the schema and the help resolvers, then hand over to Hydra."""
    os.environ.setdefault("WANDB_SILENT", "true")
    register_schemas()
    register_help_resolvers()
    app()


if __name__ == "__main__":
    main()
