"""The Hydra entry point (``rl-tickets`` / ``python -m rl_tickets``): compose, validate, dispatch.

Everything below this module takes plain typed objects; Hydra stays here. Every way a job can end
early ends in one line on stderr: a user error (Hydra's own included) with exit status 2, an OS error
the user can fix (disk full, read-only root) with 2, an interrupt (Ctrl-C, SIGTERM) with 130/143 and
the command that resumes, a run that stopped itself (a worker died twice, the chain's lock was lost)
with 1, what is kept and the command that resumes.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rl_tickets.chain.store import PublishRefused
from rl_tickets.chain.workers import WorkerDied
from rl_tickets.cli import command_line
from rl_tickets.cli.applicability import given_keys
from rl_tickets.cli.help import register_help_resolvers
from rl_tickets.cli.job import run_job
from rl_tickets.cli.objective import objective
from rl_tickets.cli.preflight import unknown_keys
from rl_tickets.cli.resume import interrupted_line, stopped_line
from rl_tickets.cli.stops import (
    Interrupted,
    acknowledge,
    exit_code,
    interrupts,
    os_error_line,
    raise_pending,
    signal_name,
)
from rl_tickets.config import Config, ConfigError, register_schemas
from rl_tickets.trainers import UserError


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


def _fail(message: str) -> NoReturn:
    """Print ``rl-tickets: error: <message>`` on stderr and exit 2."""
    print(f"rl-tickets: error: {message}", file=sys.stderr)
    sys.exit(2)


def _os_error(error: OSError) -> NoReturn:
    """One line and exit 2 for an OS error the user can fix (disk full, read-only root); else re-raise."""
    line = os_error_line(error)
    if line is None:
        raise error
    print(line, file=sys.stderr)
    sys.exit(2)


def _config(composed: DictConfig) -> Config:
    """The typed config, refusing keys the schema does not have (``+unknown_key=1``)."""
    unknown = unknown_keys(OmegaConf.to_container(composed, resolve=True))  # type: ignore[arg-type]
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)}; `rl-tickets --help` lists every key")
    return OmegaConf.to_object(composed)  # type: ignore[return-value]


@hydra.main(version_base="1.3", config_path="pkg://rl_tickets.conf", config_name="config")
def app(composed: DictConfig) -> float:
    """Run one job (one chain) from a composed config; every early end is one line (module doc).

    :param composed: the config Hydra composed from conf/ and the command line.
    :return: the job's ``objective`` (:mod:`rl_tickets.cli.objective`), which Hydra sweepers optimise.
    """
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    cfg: Config | None = None
    try:
        cfg = _config(composed)
        given = given_keys(HydraConfig.get().overrides.task)  # what the user set (not the defaults)
        chain = run_job(cfg, multirun=multirun, live=sys.stdout.isatty() and not multirun, given=given)
        raise_pending()  # an interrupt a library swallowed still stops the job with its own line and status
        return objective(chain, cfg.objective, cfg.prune.levels)
    except (ConfigError, UserError) as error:
        _remove_hydra_dir(Path(composed.root))
        _fail(str(error))
    except OSError as error:
        _os_error(error)
    except (WorkerDied, PublishRefused) as error:  # the run stopped itself: finished levels are kept
        assert cfg is not None
        print(stopped_line(cfg, str(error), sys.argv[1:]), file=sys.stderr)
        sys.exit(1)
    except (KeyboardInterrupt, Interrupted) as error:
        if cfg is None:
            raise  # nothing started: main() says so
        acknowledge()
        print(interrupted_line(cfg, signal_name(error), sys.argv[1:]), file=sys.stderr)
        sys.exit(exit_code(error))


def main() -> None:
    """Console entry: check the command line, register the schema and the help resolvers, run Hydra."""
    os.environ.setdefault("WANDB_SILENT", "true")
    argv = command_line.rewrite(sys.argv[1:])
    try:
        command_line.check(argv)
    except ConfigError as error:
        _fail(str(error))
    sys.argv = [sys.argv[0], *argv]
    register_schemas()
    register_help_resolvers()
    with interrupts(), command_line.hydra_raises() as catching:
        try:
            app()
        except (HydraException, OmegaConfBaseException) as error:
            if not catching:
                raise
            _fail(command_line.one_line(error))
        except OSError as error:  # Hydra creating its run directory under root
            _os_error(error)
        except (KeyboardInterrupt, Interrupted) as error:  # while Hydra composed or launched: no job ran
            print(f"rl-tickets: interrupted ({signal_name(error)}) before any level started", file=sys.stderr)
            sys.exit(exit_code(error))


if __name__ == "__main__":
    main()
