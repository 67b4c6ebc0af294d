"""The end of a multirun sweep: one table per experiment, mean, sd and n over seeds per level and variant.

A Hydra callback (registered in ``conf/config.yaml``) that runs in the launching process once every
job has finished, whatever the launcher (basic, joblib, submitit): it finds the sweep's chains from the
configs Hydra saved per job (``<sweep dir>/<job>/.hydra/config.yaml``), so it needs nothing from the
jobs' processes. The table also goes to ``<sweep dir>/summary.csv``. The full report (verdicts, CIs,
plots) stays ``rl-tickets-report ROOT``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from rl_tickets.cli.console import fmt_value, text_table
from rl_tickets.config import Config, ConfigError
from rl_tickets.stability.choose import resolve_auto

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = ["experiment", "metric", "level", "variant", "density", "n", "mean", "sd"]


def sweep_chain_dirs(sweep_dir: Path) -> list[Path]:
    """The chain directories (``ROOT/chains/<hash>/seed_<s>``) of a sweep's jobs that exist on disk.

    :param sweep_dir: Hydra's sweep directory (one subdirectory per job).
    """
    from rl_tickets.chain.store import ChainPaths

    chains: dict[Path, None] = {}  # insertion-ordered set: jobs in their order
    for saved in sorted(sweep_dir.glob("*/.hydra/config.yaml")):
        # A job that failed validation removed its directory; anything unreadable is simply not counted.
        try:
            composed = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(saved))
            cfg: Config = OmegaConf.to_object(composed)  # type: ignore[assignment]
        except Exception as error:  # omegaconf raises several types on a foreign or partial file
            log.warning("sweep summary: skipping %s (%s)", saved, error)
            continue
        if cfg.rewind.auto:  # the job ran the chain with the step its analysis chose: find that chain
            try:
                cfg, _ = resolve_auto(cfg)
            except ConfigError as error:  # the job itself stopped on the same line before training
                log.warning("sweep summary: skipping %s (%s)", saved, error)
                continue
        chain = ChainPaths.of(cfg).chain
        if (chain / "levels.csv").is_file():
            chains[chain] = None
    return list(chains)


def summary_frame(chain_dirs: list[Path]) -> pd.DataFrame:
    """Mean, sd (ddof=1) and n over seeds per experiment, level and variant.

    :param chain_dirs: chain directories (one seed each).
    :return: columns :data:`SUMMARY_COLUMNS`.
    """
    from rl_tickets.report.loading import group_chains, load_chain
    from rl_tickets.report.tables import per_seed_table

    experiments = group_chains(c for d in chain_dirs if (c := load_chain(d)) is not None)
    frames = []
    for exp in experiments:
        per_seed = per_seed_table(exp)
        if per_seed.empty:
            continue
        grouped = per_seed.groupby(["level", "variant"], sort=False)
        frame = grouped.agg(
            density=("density", "mean"), n=("value", "count"), mean=("value", "mean"), sd=("value", "std")
        ).reset_index()
        frames.append(frame.assign(experiment=exp.label, metric=exp.metric))
    if not frames:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    return pd.concat(frames, ignore_index=True)[SUMMARY_COLUMNS]


def summary_text(summary: pd.DataFrame) -> str:
    """One plain-text table per experiment (never wrapped)."""
    blocks = []
    for (experiment, metric), rows in summary.groupby(["experiment", "metric"], sort=False):
        cells = [
            [r.level, r.variant, f"{r.density:.4f}", r.n, fmt_value(r.mean), fmt_value(r.sd)]
            for r in rows.itertuples()
        ]
        table = text_table(["level", "variant", "density", "n", "mean", "sd"], cells)
        blocks.append(f"{experiment}: {metric} over seeds (sd: sample standard deviation)\n{table}")
    return "\n\n".join(blocks)


class SweepSummary(Callback):
    """Print and log the sweep's per-variant summary when a multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Summarise the chains of the sweep that just finished.

        :param config: the sweep's config (``hydra.sweep.dir`` locates the jobs).
        """
        sweep_dir = Path(config.hydra.sweep.dir)
        # The jobs' results are complete on disk: a summary failure must not fail the sweep.
        try:
            summary = summary_frame(sweep_chain_dirs(sweep_dir))
        except Exception as error:
            log.warning(
                "sweep summary failed (%s: %s); run rl-tickets-report ROOT", type(error).__name__, error
            )
            return
        if summary.empty:
            return
        summary.to_csv(sweep_dir / "summary.csv", index=False)
        # Printed once: in the launching process Hydra's own logging sends INFO records to the console
        # too (hydra/hydra_logging), so a logged copy would print the table a second time.
        text = f"sweep summary ({sweep_dir / 'summary.csv'}):\n{summary_text(summary)}"
        print(text, flush=True)
        log.debug(text)
