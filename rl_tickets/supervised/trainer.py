"""The supervised trainer: LeNet-300-100 and Conv-2/4/6 classifiers (Frankle & Carbin 2019).

The second client of the engine, beside :mod:`rl_tickets.rl.trainer`: the same masks, pruning, rewinding, controls
and results layout, with a plain PyTorch loop that reads top to bottom in :meth:`SupervisedTrainer.train`.

- **Data** lives on the device as whole tensors (moved once, in the constructor); minibatches are
  drawn there with a seeded ``torch.Generator``: a fresh permutation per epoch, full batches only,
  no DataLoader and no per-sample Python.
- **Iterations**: the step counter counts optimizer updates done. ``rewind.pt`` at step k holds the
  state after k updates, and a level rewound there trains ``budget - k`` more, ending at the budget.
- **Learning rate**: the paper's optimizers have no schedule, so ``retrain.mode=finetune`` differs
  from rewinding only through its constant ``retrain.finetune_lr`` (:attr:`LevelPlan.constant_lr`),
  and ``lr_rewind`` (final weights, counter back to k) trains at ``train.lr`` like the dense run.
- **Evaluation**: validation loss/accuracy and test accuracy at the level's start, at every
  multiple of ``eval.every`` and at its end. **Early stopping** (the paper's): the evaluated
  iteration with the lowest *validation* loss; the test set is only read, never used to choose.
  Iterations are counted on the absolute counter, so a level rewound to k reports e.g. k + 900.
- **Checkpoints** (``init.pt``, ``rewind.pt``, ``model.pt``) are self-describing dicts (nanoGPT style)
  that load with ``torch.load(path, weights_only=True)``: ``format``, ``model``, ``input_shape``,
  ``num_classes``, ``width_scale``, ``state_dict`` (parameters *and* mask buffers), ``optimizer``,
  ``optimizer_state``, ``step``, ``lr``, ``seed``, ``data``. No sampler state: every level reseeds
  its sampler from :attr:`LevelPlan.seed`, as the RL trainer reseeds SB3.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rl_tickets.config import ConfigError, DataConfig, EvalConfig, ModelConfig, TrainConfig
from rl_tickets.level import CurveSink, LevelOutcome, LevelPlan, MaskSchedule, snapshot_file
from rl_tickets.sparsity.dynamic import start_sparse_update
from rl_tickets.sparsity.masks import Mask, prunable_names, read_mask, set_masks
from rl_tickets.supervised.data import Dataset, load_dataset
from rl_tickets.supervised.models import MODELS, build_model
from rl_tickets.supervised.networks import OPTIMIZERS, Networks, pick_device
from rl_tickets.supervised.steps import evaluate, minibatches
from rl_tickets.timing import Stopwatch


class SupervisedTrainer:
    """Trains image classifiers level by level; see :class:`rl_tickets.level.Trainer`."""

    unit = "iterations"
    # Frankle & Carbin 2019 report test accuracy at the early-stopping iteration (minimum validation loss).
    metric = "test_accuracy_at_early_stop"
    columns = (
        "iterations",
        "early_stop_iteration",
        "test_accuracy_at_early_stop",
        "test_accuracy",
        "val_loss_min",
    )
    checkpoint_name = "model.pt"

    def __init__(
        self,
        model: ModelConfig,
        data: DataConfig,
        train: TrainConfig,
        evaluation: EvalConfig,
        device: str,
        split_seed: int,
        dataset: Dataset | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        """Check the settings, load the data and move it to the device once.

        :param model: the network (lenet_300_100, conv2, conv4, conv6).
        :param data: the dataset name, root and download flag.
        :param train: iterations (the budget), batch size, learning rate, optimizer.
        :param evaluation: ``every``: validate and test every this many iterations (0: only at the
            start and end of a level).
        :param device: auto, cpu, cuda or cuda:N.
        :param split_seed: fixes the train/validation/test split (the chain seed).
        :param dataset: use these splits instead of loading ``data`` (tests, benchmarks).
        :param clock: times training, evaluation and saving (metrics.json's ``time``; wall time:
            the benchmark passes ``time.process_time`` to see through other jobs' load).
        :raises MissingDataError: if the dataset's files are missing and cannot be downloaded.
        """
        check_settings(model, train)
        self.model_name, self.train_cfg, self.evaluation = model.name, train, evaluation
        self.budget, self.clock = train.iterations, clock
        self.device = pick_device(device)
        if dataset is None:
            dataset = load_dataset(data.name, data.root, data.download, seed=split_seed)
        empty = [name for name in ("train", "val", "test") if len(getattr(dataset, name)) == 0]
        if empty:
            raise ConfigError(f"data={dataset.name} has empty split(s) {empty}; use a larger dataset")
        self.input_shape, self.num_classes = tuple(dataset.input_shape), dataset.num_classes
        self.nets = Networks(model.name, self.input_shape, self.num_classes, train, self.device, dataset.name)
        try:
            self.nets.skeleton()
        except ValueError as error:
            raise ConfigError(
                f"model={model.name} cannot read data={dataset.name} images of shape {self.input_shape}: {error}"
            ) from None
        self.data = dataset.to(self.device)

    def snapshot_path(self, out: Path, step: int) -> Path:
        """``init.pt`` for step 0, else ``rewind.pt``: the dense run's saved states.

        :param out: the dense run's directory.
        :param step: the rewind step.
        """
        return out / ("init.pt" if step == 0 else "rewind.pt")

    # ---- one level ------------------------------------------------------------------------------
    def train(self, plan: LevelPlan, out: Path, curve_sink: CurveSink | None = None) -> LevelOutcome:
        """Train one level; writes ``model.pt`` and, for a dense run, ``init.pt`` / ``rewind.pt``.

        :param plan: what to start from and how to train.
        :param out: the level's (temporary) directory.
        :param curve_sink: receives every evaluation row while training.
        """
        watch = Stopwatch(self.clock)
        model, optimizer, step, width_scale = self.nets.start(plan)
        if plan.start is None and plan.snapshot_step is not None:
            with watch.section("save"):
                self.nets.save(self.snapshot_path(out, 0), model, optimizer, 0, width_scale, plan.seed)
        generator = torch.Generator(device=self.device).manual_seed(plan.seed)
        batches = minibatches(self.data.train, self.train_cfg.batch_size, generator)
        every, first, end = self.evaluation.every, step, step + plan.steps
        curve: list[dict[str, Any]] = []
        # Summed on the device, read only at evaluations: no host sync per iteration.
        train_loss, since = torch.zeros((), device=self.device), 0
        snapshot_taken: int | None = None
        saves = snapshot_saves(plan, out, self.snapshot_path)

        def record() -> None:
            nonlocal train_loss, since
            with watch.section("eval"):
                val_loss, val_accuracy = evaluate(model, self.data.val)
                row: dict[str, Any] = {
                    "step": step,
                    "val/loss": val_loss,
                    "val/accuracy": val_accuracy,
                    "test/accuracy": evaluate(model, self.data.test)[1],
                }
                if since:
                    row["train/loss"] = float(train_loss) / since
                    train_loss, since = torch.zeros((), device=self.device), 0
                curve.append(row)
                if curve_sink:
                    curve_sink(row)

        model.train()
        record()
        # Evaluations and snapshots inside the loop pause the "train" section (see Stopwatch).
        with watch.section("train"):
            while step < end:
                if step in saves:  # the rewind snapshot, or one of the instability analysis's grid
                    with watch.section("save"):
                        self.nets.save(saves[step], model, optimizer, step, width_scale, plan.seed)
                    snapshot_taken = step if step == plan.snapshot_step else snapshot_taken
                if plan.mask_schedule is not None and plan.mask_schedule_every > 0:
                    if step % plan.mask_schedule_every == 0:
                        update_mask(model, plan.mask_schedule, step)
                pending = start_sparse_update(model, plan.sparse, step)  # static, SET, RigL
                images, labels = next(batches)
                loss = F.cross_entropy(model(images), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if pending is not None:
                    pending.finish(optimizer)
                train_loss += loss.detach()
                since += 1
                step += 1
                if every and step % every == 0 and step < end:
                    record()
        if curve[-1]["step"] != step:
            record()
        with watch.section("save"):
            self.nets.save(out / self.checkpoint_name, model, optimizer, step, width_scale, plan.seed)

        if plan.snapshot_step and snapshot_taken is None:
            raise RuntimeError(f"training ended at iteration {step} before rewind.step={plan.snapshot_step}")
        lr = optimizer.param_groups[0]["lr"]
        mask = read_mask(model) if plan.mask_schedule is not None else None
        facts = {
            "start_step": first,
            "end_step": step,
            "seed": plan.seed,
            "lr": lr,
            "width_scale": width_scale,
        }
        facts.update(snapshot_facts(plan, snapshot_taken, first, step))
        return level_outcome(curve, facts, mask, watch.record(("train", "eval", "save")))

    # ---- weights for pruning and controls -------------------------------------------------------
    def load_params(self, checkpoint: Path) -> dict[str, torch.Tensor]:
        """All parameters of a saved network (CPU), without the mask buffers.

        :param checkpoint: a ``.pt`` written by this trainer.
        """
        state = self.nets.read(checkpoint, "cpu")["state_dict"]
        return {n: state[n].clone() for n, _ in self.nets.skeleton().named_parameters()}

    def fresh_params(self, seed: int, width_scale: float = 1.0) -> dict[str, torch.Tensor]:
        """All parameters of a freshly initialised network (Gaussian Glorot, zero biases), CPU.

        :param seed: initialisation seed.
        :param width_scale: hidden-width factor.
        """
        model = build_model(self.model_name, self.input_shape, self.num_classes, seed, width_scale)
        return {n: p.detach().clone() for n, p in model.named_parameters()}

    def prunable(self, params: dict[str, torch.Tensor], include_biases: bool) -> list[str]:
        """Weights (and optionally biases) of the Linear/Conv2d layers, in network order.

        :param params: parameters by name.
        :param include_biases: include biases.
        """
        return [n for n in prunable_names(self.nets.skeleton(), include_biases) if n in params]

    def describe(self) -> dict[str, Any]:
        """Input layer (LeNet's first Linear reads pixels; none for conv nets), sizes and shapes."""
        return {
            **self.nets.describe(),
            "actor_layers": [],
            "critic_layers": [],
            "observation_names": None,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "split_sizes": {s: len(getattr(self.data, s)) for s in ("train", "val", "test")},
            "device": str(self.device),  # the device used (device=auto resolves to one)
        }

    def evaluate_params(self, params: dict[str, torch.Tensor], mask: Mask, start: Path | None) -> float:
        """Test accuracy of an *untrained* network with these parameters and this mask (supermasks).

        :param params: parameters by name.
        :param mask: the mask applied before evaluating.
        :param start: unused (no input statistics to restore).
        """
        model = self.nets.build(0, 1.0)
        named = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in params.items():
                named[name].copy_(value.to(self.device))
        set_masks(model, mask)
        return evaluate(model, self.data.test)[1]

    def untrained_row(self, mean: float, std: float, best: float) -> dict[str, Any]:
        """The levels.csv metrics of an untrained (supermask) level: accuracy over draws, 0 iterations.

        :param mean: mean test accuracy over draws.
        :param std: standard deviation across draws (in metrics.json).
        :param best: the best draw's accuracy (in metrics.json).
        """
        return {
            "iterations": 0,
            "test_accuracy_at_early_stop": mean,
            "test_accuracy": mean,
            "test_accuracy_std": std,
            "test_accuracy_max": best,
        }


def level_outcome(
    curve: list[dict[str, Any]], facts: dict[str, Any], mask: Mask | None, spent: dict[str, float]
) -> LevelOutcome:
    """A level's metrics from its evaluation curve: early stopping on validation loss only (Frankle &
    Carbin 2019; ties: the earliest iteration); the test set is only read.

    :param curve: the level's evaluation rows (``step``, ``val/loss``, ``val/accuracy``, ``test/accuracy``).
    :param facts: ``start_step``, ``end_step``, ``seed``, ``lr``, ``width_scale`` and, for a dense
        run, ``snapshot_step`` (metrics.json's ``extra``).
    :param mask: the final mask of a gradual level (None: the plan's mask).
    :param spent: seconds per section.
    """
    best = min(curve, key=lambda row: row["val/loss"])
    final = curve[-1]
    metrics = {
        "iterations": facts["end_step"] - facts["start_step"],
        "early_stop_iteration": best["step"],
        "test_accuracy_at_early_stop": best["test/accuracy"],
        "test_accuracy": final["test/accuracy"],
        "val_loss_min": best["val/loss"],
    }
    snapshot = {k: facts[k] for k in ("snapshot_step", "snapshots") if k in facts}
    extra: dict[str, Any] = {
        **{k: facts[k] for k in ("start_step", "end_step", "seed", "lr", "width_scale")},
        "val_accuracy_at_early_stop": best["val/accuracy"],
        "val_accuracy": final["val/accuracy"],
        **snapshot,
    }
    return LevelOutcome(metrics=metrics, curve=curve, mask=mask, extra=extra, time=spent)


def snapshot_saves(plan: LevelPlan, out: Path, rewind_path: Callable[[Path, int], Path]) -> dict[int, Path]:
    """Where the run saves its state at which iteration: the rewind snapshot (``plan.snapshot_step``,
    a dense level) and the instability analysis's grid (``plan.snapshot_steps``).

    :param plan: the level's plan.
    :param out: the level's directory.
    :param rewind_path: the trainer's :meth:`SupervisedTrainer.snapshot_path`.
    """
    saves = {k: snapshot_file(out, k, ".pt") for k in plan.snapshot_steps}
    if plan.snapshot_step:
        if plan.snapshot_step in saves:
            raise ValueError("a plan saves its rewind snapshot or a grid of snapshots at one step, not both")
        saves[plan.snapshot_step] = rewind_path(out, plan.snapshot_step)
    return saves


def snapshot_facts(plan: LevelPlan, taken: int | None, first: int, end: int) -> dict[str, Any]:
    """metrics.json's ``snapshot_step`` (the rewind snapshot) and ``snapshots`` (the grid: requested ->
    taken, every step exactly), each only when the plan asked for it.

    :param plan: the level's plan.
    :param taken: the iteration the rewind snapshot was saved at (None: none).
    :param first: the iteration the run started at.
    :param end: the iteration it ended at.
    """
    facts: dict[str, Any] = {} if taken is None else {"snapshot_step": taken}
    if plan.snapshot_steps:
        if not all(first <= k < end for k in plan.snapshot_steps):
            raise RuntimeError(f"snapshot steps {list(plan.snapshot_steps)} lie outside [{first}, {end})")
        facts["snapshots"] = {str(k): k for k in plan.snapshot_steps}
    return facts


def check_settings(model: ModelConfig, train: TrainConfig) -> None:
    """Refuse an unknown network or optimizer, or a batch size or learning rate that is not positive.

    :param model: the network.
    :param train: batch size, learning rate, optimizer.
    """
    if model.name not in MODELS:
        raise ConfigError(f"model.name={model.name!r} is not valid; choose one of: {', '.join(MODELS)}")
    if train.optimizer not in OPTIMIZERS:
        raise ConfigError(
            f"train.optimizer={train.optimizer!r} is not valid; choose one of: {', '.join(OPTIMIZERS)}"
        )
    if train.batch_size <= 0 or train.lr <= 0:
        raise ConfigError(f"train.batch_size={train.batch_size} and train.lr={train.lr} must be > 0")


def update_mask(model: nn.Module, schedule: MaskSchedule, step: int) -> None:
    """Gradual pruning: ask the schedule for a new mask at ``step`` and apply it.

    :param model: the classifier.
    :param schedule: the plan's mask schedule.
    :param step: the iteration counter.
    """
    weights = dict(model.named_parameters())
    names = prunable_names(model, include_biases=True)
    mask = schedule(step, {n: weights[n].detach().cpu() for n in names})
    if mask is not None:
        set_masks(model, mask)
