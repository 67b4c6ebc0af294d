"""The GPU check's steps (run by ``scripts/gpu_check.sh``, which first installs the wheelhouse).

Each step runs in its own process with a time limit taken from one overall budget (``--budget-s``),
so a slow or failing step is recorded and the next one still runs. Steps:

1. ``cuda_tests``: ``pytest -m cuda`` (tests/test_gpu_check.py) on ``--device``;
2. ``bench_masks``: ``scripts/bench_masks.py --quick`` (its agents are MLPs on the CPU by design);
3. ``minatar_ppo``, ``minatar_dqn``: a chain (dense level 0 + one pruned level) on MinAtar Breakout
   with the MinAtar CNN, 20,000 environment steps per level, ``device=<device>``;
4. ``conv2``: the supervised Conv-2 on the synthetic data set, 300 iterations per level;
5. ``profile``: ``scripts/gpu_profile.py``: host-device copies per optimizer step with and without masks.

``--tiny`` runs the same steps at toy sizes (CI runs ``--tiny --device cpu``). Writes
``gpu_check.json`` (every step's command, status, seconds and numbers) and ``gpu_check.md`` (tables)
into ``--out``, and each step's output under ``--out/logs/``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# Steps beyond this overall time are skipped (recorded as such): about 5 minutes on the GPU machine.
BUDGET_S = {False: 300.0, True: 1200.0}  # tiny: a correctness check (CI), never cut short by a slow machine
# The experiment name each training step gives its chain (read back from meta.json).
CHAIN_NAMES = {"minatar_ppo": "gpu_ppo_minatar", "minatar_dqn": "gpu_dqn_minatar", "conv2": "gpu_conv2"}


def chain_command(algo: str, device: str, tiny: bool, root: Path) -> list[str]:
    """``rl-tickets`` for a MinAtar CNN chain: dense level 0 and one pruned level.

    :param algo: ``ppo`` or ``dqn``.
    :param device: the device.
    :param tiny: 512 steps per level instead of 20,000.
    :param root: the results root.
    """
    steps = 512 if tiny else 20_000
    command = [sys.executable, "-m", "rl_tickets", f"algo={algo}", "env=minatar_breakout", f"root={root}"]
    command += [f"train.timesteps={steps}", "prune.levels=1", f"device={device}", "logger.mode=disabled"]
    command += [f"eval.every={steps // 2}", f"eval.episodes={1 if tiny else 5}", f"name=gpu_{algo}_minatar"]
    if algo == "dqn":  # the preset waits 5,000 steps and keeps 100,000 transitions
        command += [f"algo.hyperparams.learning_starts={256 if tiny else 1000}"]
        command += [f"algo.hyperparams.buffer_size={2048 if tiny else 20_000}"]
    elif tiny:  # rollouts of 32 x 8 envs instead of 128 x 8
        command += ["algo.hyperparams.n_steps=32"]
    return command + (["threads=1"] if tiny else [])


def conv2_command(device: str, tiny: bool, root: Path) -> list[str]:
    """``rl-tickets task=supervised`` with Conv-2 on the synthetic data set (no download needed).

    :param device: the device.
    :param tiny: 20 iterations per level instead of 300.
    :param root: the results root.
    """
    iterations = 20 if tiny else 300
    command = [sys.executable, "-m", "rl_tickets", "task=supervised", "model=conv2", "data=synthetic"]
    command += [f"train.iterations={iterations}", f"eval.every={iterations // 2}", "prune.levels=1"]
    command += [f"device={device}", "logger.mode=disabled", f"root={root}", "name=gpu_conv2"]
    return command + (["threads=1"] if tiny else [])


def steps(device: str, tiny: bool, out: Path) -> dict[str, list[str]]:
    """Every step's command, in order.

    :param device: the device.
    :param tiny: toy sizes.
    :param out: the output directory (results roots and the profile's JSON go there).
    """
    pytest = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider"]
    pytest += ["--rootdir", str(REPO), str(REPO / "tests" / "test_gpu_check.py")]
    bench = [sys.executable, str(REPO / "scripts" / "bench_masks.py"), "--quick", "--no-warmup"]
    if tiny:
        bench += [
            "--algos",
            "ppo",
            "dqn",
            "--steps",
            "ppo=512",
            "dqn=512",
        ]  # PPO: 2 rollouts (lr 0 at the end of the first)
    profile = [sys.executable, str(REPO / "scripts" / "gpu_profile.py"), "--device", device]
    profile += ["--out", str(out / "profile.json")] + (["--tiny", "--threads", "1"] if tiny else [])
    return {
        "cuda_tests": pytest,
        "bench_masks": bench,
        "minatar_ppo": chain_command("ppo", device, tiny, out / "results"),
        "minatar_dqn": chain_command("dqn", device, tiny, out / "results"),
        "conv2": conv2_command(device, tiny, out / "results"),
        "profile": profile,
    }


def run_step(name: str, command: list[str], limit: float, out: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run one step with a time limit; its output goes to ``out/logs/<name>.log``.

    :param name: the step's name.
    :param command: its command line.
    :param limit: seconds it may take.
    :param out: the output directory (the working directory of the step).
    :param env: its environment variables.
    :return: ``{command, status: ok|failed|timeout, returncode, seconds, log}``.
    """
    log = out / "logs" / f"{name}.log"
    started = time.perf_counter()
    with open(log, "w") as handle:
        try:
            done = subprocess.run(
                command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=out, timeout=limit
            )
            status, code = ("ok" if done.returncode == 0 else "failed"), done.returncode
        except subprocess.TimeoutExpired:
            status, code = "timeout", None
    seconds = round(time.perf_counter() - started, 1)
    return {"command": command, "status": status, "returncode": code, "seconds": seconds, "log": str(log)}


def chain_rows(root: Path, name: str) -> list[dict[str, Any]]:
    """Per level of the named chain: density, metric, training steps/s and seconds, and the device used.

    :param root: the results root.
    :param name: the experiment name the step gave.
    """
    rows = []
    for meta_file in sorted(root.glob("chains/*/seed_0/meta.json")):
        meta = json.loads(meta_file.read_text())
        if meta.get("name") != name:
            continue
        chain, dense = meta_file.parent, Path(meta["dense_dir"])
        with open(chain / "levels.csv", newline="") as handle:
            for row in csv.DictReader(handle):
                level = int(row["level"])
                directory = (dense if level == 0 else chain) / f"level_{level:02d}" / row["variant"]
                metrics = json.loads((directory / "metrics.json").read_text())
                rows.append(
                    {
                        "level": level,
                        "variant": row["variant"],
                        "density": round(float(row["density"]), 4),
                        meta["metric"]: float(row[meta["metric"]]),
                        "steps_per_s": metrics.get("steps_per_s"),
                        "train_s": metrics.get("time", {}).get("train_s"),
                        "device": meta.get("device"),
                    }
                )
    return rows


def pytest_counts(log: Path) -> dict[str, int]:
    """``passed``/``skipped``/``failed`` counts from pytest's summary line.

    :param log: the step's log.
    """
    text = log.read_text() if log.exists() else ""
    return {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|skipped|failed|error)", text)}


def bench_table(log: Path) -> list[str]:
    """The markdown table bench_masks prints (its lines starting with ``|``).

    :param log: the step's log.
    """
    return [line for line in (log.read_text() if log.exists() else "").splitlines() if line.startswith("|")]


def markdown(record: dict[str, Any]) -> str:
    """``gpu_check.md``: the environment, each step's status, and the numbers as tables.

    :param record: what ``gpu_check.json`` holds.
    """
    env = record["environment"]
    out = [f"# GPU check ({'tiny' if record['tiny'] else 'full'}, device={record['device']})\n"]
    out.append(
        f"torch {env['torch']} (CUDA {env['cuda_version']}), {env['device_name']}, Python {env['python']}, "
        f"{env['cpu_count']} CPU cores; budget {record['budget_s']:.0f} s, used {record['seconds']:.0f} s\n"
    )
    out += ["| step | status | seconds |", "|---|---|---:|"]
    out += [f"| {name} | {step['status']} | {step['seconds']} |" for name, step in record["steps"].items()]
    tests = record["steps"].get("cuda_tests", {}).get("counts")
    if tests:
        out.append(f"\nCUDA tests: {', '.join(f'{n} {k}' for k, n in tests.items())}\n")
    for name in ("minatar_ppo", "minatar_dqn", "conv2"):
        rows = record["steps"].get(name, {}).get("levels") or []
        if rows:
            metric = [
                k
                for k in rows[0]
                if k not in ("level", "variant", "density", "steps_per_s", "train_s", "device")
            ]
            out += [
                f"\n{name}:\n",
                f"| level | density | {metric[0]} | steps/s | train s | device |",
                "|---:|---:|---:|---:|---:|---|",
            ]
            out += [
                f"| {r['level']} | {r['density']} | {r[metric[0]]:.4g} | {r['steps_per_s']} | {r['train_s']} | {r['device']} |"
                for r in rows
            ]
    table = record["steps"].get("bench_masks", {}).get("table")
    if table:
        out += ["\nbench_masks --quick:\n", *table]
    profile = record["steps"].get("profile", {}).get("result")
    if profile:
        out += ["\nper optimizer step (torch.profiler, one train() call):\n"]
        out += [
            "| algo | variant | optimizer steps | memcpy HtoD | memcpy DtoH | host syncs |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for algo in ("ppo", "dqn"):
            for variant, numbers in profile.get(algo, {}).items():
                s = numbers["per_step"]
                out.append(
                    f"| {algo} | {variant} | {numbers['optimizer_steps']} | {s['memcpy_htod']} | "
                    f"{s['memcpy_dtoh']} | {s['host_syncs']} |"
                )
    return "\n".join(out) + "\n"


def environment() -> dict[str, Any]:
    """Python, torch, CUDA and the device's name (what the numbers were measured on)."""
    import torch

    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "device_name": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu",
        "cpu_count": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    """Run every step within the budget; write gpu_check.json and gpu_check.md.

    :param argv: arguments (default: the command line).
    :return: 0 when every step succeeded, 1 otherwise.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--budget-s", type=float, default=None, help="overall time limit in seconds (default 300; tiny 1200)"
    )
    args = parser.parse_args(argv)
    out = args.out.resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    budget = args.budget_s or BUDGET_S[args.tiny]
    env = {
        **os.environ,
        "WANDB_MODE": "disabled",
        "RL_TICKETS_TEST_DEVICE": args.device,
        "PYTHONUNBUFFERED": "1",
    }
    record: dict[str, Any] = {"device": args.device, "tiny": args.tiny, "budget_s": budget, "steps": {}}
    record["environment"] = environment()
    started = time.perf_counter()
    for name, command in steps(args.device, args.tiny, out).items():
        left = budget - (time.perf_counter() - started)
        if left < 5:
            record["steps"][name] = {"command": command, "status": "skipped (budget spent)", "seconds": 0.0}
            continue
        step = run_step(name, command, left, out, env)
        log = Path(step["log"])
        if name == "cuda_tests":
            step["counts"] = pytest_counts(log)
        elif name == "bench_masks":
            step["table"] = bench_table(log)
        elif name == "profile" and (out / "profile.json").exists():
            step["result"] = json.loads((out / "profile.json").read_text())
        else:
            step["levels"] = chain_rows(out / "results", CHAIN_NAMES[name])
        record["steps"][name] = step
        print(f"gpu_check: {name}: {step['status']} in {step['seconds']} s", flush=True)
    record["seconds"] = round(time.perf_counter() - started, 1)
    (out / "gpu_check.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "gpu_check.md").write_text(markdown(record))
    print(f"gpu_check: wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    return 0 if all(step["status"] == "ok" for step in record["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
