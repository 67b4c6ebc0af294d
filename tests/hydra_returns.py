"""A Hydra callback for tests: each job writes its task function's return value (the ``objective``)
to ``<job output dir>/return.json``, so a test can read what a sweeper would have been given."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback


class RecordReturns(Callback):
    """Write ``{"value": <return value>, "seed": <seed>}`` when a job ends."""

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        """Record one job's return value beside its Hydra files.

        :param config: the job's composed config.
        :param job_return: Hydra's record of the job (``return_value`` is what the task returned).
        """
        out = Path(config.hydra.runtime.output_dir)
        (out / "return.json").write_text(json.dumps({"value": job_return.return_value, "seed": config.seed}))
