"""scripts/report_graesser2022.py: what the study's runs cost (cost.md)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType


def _load_script() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "scripts" / "report_graesser2022.py"
    spec = importlib.util.spec_from_file_location("report_graesser2022", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


SCRIPT = _load_script()


def level(directory: Path, train_s: float, steps_per_s: float) -> None:
    """A level's metrics.json as the runner writes it: sections, their total and the throughput."""
    directory.mkdir(parents=True)
    time = {"train_s": train_s, "eval_s": 10.0, "total_s": train_s + 10.0}
    (directory / "metrics.json").write_text(json.dumps({"time": time, "steps_per_s": steps_per_s}))


def test_cost_counts_each_runs_total_once_and_a_shared_dense_level_once(tmp_path: Path) -> None:
    dense_dir = "/anywhere/dense/d0/seed_0"
    for chain, variant, train_s, rate in (("c1", "set", 110.0, 440.0), ("c2", "rigl", 290.0, 170.0)):
        seed_dir = tmp_path / "chains" / chain / "seed_0"
        level(seed_dir / "level_01" / variant, train_s, rate)
        (seed_dir / "meta.json").write_text(json.dumps({"algo": "dqn", "dense_dir": dense_dir}))
    level(tmp_path / "dense" / "d0" / "seed_0" / "level_00" / "ticket", 1790.0, 30.0)
    table = SCRIPT.cost_markdown(tmp_path)
    # Both chains share the dense level: one dense run of 1,800 s, not two.
    assert "| dqn | dense | 1 | 0.50 | 1800 | 1800 (30 steps/s) |" in table
    assert "| dqn | set | 1 | 0.03 | 120 | 120 (440 steps/s) |" in table
    assert "| dqn | all |  | 0.62 |  |  |" in table  # 1,800 + 120 + 300 s = 2,220 s
