"""The supervised networks and their checkpoints: build, save, read and restart exactly as a plan says.

Checkpoints (``init.pt``, ``rewind.pt``, ``model.pt``) are self-describing dicts (nanoGPT style)
that load with ``torch.load(path, weights_only=True)``; see :mod:`rl_tickets.supervised.trainer`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rl_tickets.config import TrainConfig
from rl_tickets.level import LevelPlan
from rl_tickets.sparsity.masks import attach_masks, enforce_after_steps, prunable_names, set_masks
from rl_tickets.supervised.models import MODELS, build_model

CHECKPOINT_FORMAT = "rl_tickets.supervised/1"

OPTIMIZERS: dict[str, Callable[[Iterable[nn.Parameter], float], torch.optim.Optimizer]] = {
    # The paper's choice for LeNet and Conv-2/4/6.
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
    # Its SGD ablations use momentum 0.9.
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9),
}


def pick_device(device: str) -> torch.device:
    """``auto`` means CUDA when available, else the CPU; anything else is taken as given.

    :param device: auto, cpu, cuda or cuda:N.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Networks:
    """One classifier architecture on one device: fresh networks, optimizers and checkpoints."""

    def __init__(
        self,
        model_name: str,
        input_shape: tuple[int, ...],
        num_classes: int,
        train: TrainConfig,
        device: torch.device,
        data_name: str,
    ) -> None:
        """:param model_name: a key of :data:`MODELS`.
        :param input_shape: (C, H, W) or (features,).
        :param num_classes: output classes.
        :param train: the optimizer and learning rate.
        :param device: the training device.
        :param data_name: the dataset's name (recorded in checkpoints)."""
        self.model_name, self.input_shape, self.num_classes = model_name, input_shape, num_classes
        self.train_cfg, self.device, self.data_name = train, device, data_name

    def skeleton(self, width_scale: float = 1.0) -> nn.Module:
        """The network with its mask buffers on the meta device: names and shapes, no memory."""
        with torch.device("meta"):
            module = MODELS[self.model_name](self.input_shape, self.num_classes, width_scale=width_scale)
            attach_masks(module)
        return module

    def build(self, seed: int, width_scale: float) -> nn.Module:
        """A freshly initialised network with (all-ones) masks, on the training device."""
        model = build_model(self.model_name, self.input_shape, self.num_classes, seed, width_scale)
        attach_masks(model)
        return model.to(self.device)

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """A fresh optimizer over every parameter, at ``train.lr``."""
        return OPTIMIZERS[self.train_cfg.optimizer](model.parameters(), self.train_cfg.lr)

    def save(
        self,
        path: Path,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        step: int,
        width_scale: float,
        seed: int,
    ) -> None:
        """Write a self-describing checkpoint (see the module docstring)."""
        torch.save(
            {
                "format": CHECKPOINT_FORMAT,
                "model": self.model_name,
                "input_shape": list(self.input_shape),
                "num_classes": self.num_classes,
                "width_scale": width_scale,
                "state_dict": model.state_dict(),
                "optimizer": self.train_cfg.optimizer,
                "optimizer_state": optimizer.state_dict(),
                "step": step,
                "lr": optimizer.param_groups[0]["lr"],
                "seed": seed,
                "data": self.data_name,
            },
            path,
        )

    def read(self, path: Path, device: torch.device | str) -> dict[str, Any]:
        """Load a checkpoint and check that it holds this trainer's network."""
        state = torch.load(path, map_location=device, weights_only=True)
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a supervised rl_tickets checkpoint ({CHECKPOINT_FORMAT})")
        found = (state["model"], tuple(state["input_shape"]), state["num_classes"])
        wanted = (self.model_name, self.input_shape, self.num_classes)
        if found != wanted:
            raise ValueError(
                f"{path} holds {found} (model, input_shape, classes) but this trainer has {wanted}"
            )
        return state

    def start(self, plan: LevelPlan) -> tuple[nn.Module, torch.optim.Optimizer, int, float]:
        """Build or load the network and optimizer exactly as the plan says.

        :return: model, optimizer (pruned weights without gradient or state), step counter, width factor.
        """
        if plan.start is None:
            model = self.build(plan.seed, plan.width_scale)
            optimizer, step, width_scale = self.optimizer(model), 0, plan.width_scale
        else:
            state = self.read(plan.start, self.device)
            width_scale = float(state["width_scale"])
            # Uninitialised storage, then a strict load: parameters and mask buffers must all match.
            model = self.skeleton(width_scale).to_empty(device=self.device)
            model.load_state_dict(state["state_dict"])
            optimizer = self.optimizer(model)
            if plan.restore_optimizer:
                if state["optimizer"] != self.train_cfg.optimizer:
                    raise ValueError(
                        f"{plan.start} holds {state['optimizer']} state; train.optimizer is {self.train_cfg.optimizer}"
                    )
                optimizer.load_state_dict(state["optimizer_state"])
            step = int(state["step"]) if plan.start_step is None else plan.start_step
        if plan.params:
            named = dict(model.named_parameters())
            with torch.no_grad():
                for name, value in plan.params.items():
                    named[name].copy_(value.to(self.device))
        if plan.mask is not None:
            set_masks(model, plan.mask)
        # Pruned weights get no gradient and no optimizer state (a restored state is zeroed there now),
        # and are re-zeroed after every update. Only tensors whose mask prunes something are touched,
        # so a dense level costs nothing.
        enforce_after_steps(model, [optimizer])
        # A restored optimizer state carries the lr it was saved with (a fine-tuned level's constant one).
        lr = self.train_cfg.lr if plan.constant_lr is None else plan.constant_lr
        for group in optimizer.param_groups:
            group["lr"] = lr
        return model, optimizer, step, width_scale

    def describe(self) -> dict[str, Any]:
        """The input layer (LeNet's first Linear reads pixels; none for conv nets) and the weight count."""
        skeleton = self.skeleton()
        names = prunable_names(skeleton)
        weights = dict(skeleton.named_parameters())
        first = weights[names[0]]
        reads_pixels = first.dim() == 2 and first.shape[1] == math.prod(self.input_shape)
        return {
            "input_layers": [names[0]] if reads_pixels else [],
            "weights_total": sum(weights[n].numel() for n in names),
        }
