"""The deterministic actor of an SB3 policy as a list of plain ops, and torch modules built from them.

An op is a small dict (``{"op": "linear", "weight": <param name>, "bias": <param name>}``,
``{"op": "activation", "name": "ReLU"}``, ``{"op": "argmax"}``...) that refers to the policy's parameters
by name, so the same list runs dense weights, compact weights or sparse CSR weights, and it is stored in
``sparse.pt`` as is (strings, numbers and tensors: ``torch.load(..., weights_only=True)`` reads it).

The actor maps a preprocessed-as-SB3-does observation batch to the action SB3's ``predict(obs,
deterministic=True)`` returns: argmax over logits or Q-values, clipped means (PPO/A2C on boxes),
``tanh`` squashed and rescaled to the action bounds (SAC, TD3).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import torch
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import is_image_space
from torch import nn
from torch.nn import functional as F

from rl_tickets.export.level import ExportError

Op = dict[str, Any]

# The modules on each algorithm's deterministic action path, in forward order.
ACTOR_PATHS: dict[str, tuple[str, ...]] = {
    "ppo": ("pi_features_extractor", "mlp_extractor.policy_net", "action_net"),
    "a2c": ("pi_features_extractor", "mlp_extractor.policy_net", "action_net"),
    "dqn": ("q_net.features_extractor", "q_net.q_net"),
    "sac": ("actor.features_extractor", "actor.latent_pi", "actor.mu"),
    "td3": ("actor.features_extractor", "actor.mu"),
}


def _leaf_ops(module: nn.Module, prefix: str) -> list[Op]:
    """Ops of a module whose leaves run in registration order (Sequential, SB3 and MinAtar extractors)."""
    ops: list[Op] = []
    for name, leaf in module.named_modules(prefix=prefix):
        if list(leaf.children()):
            continue
        if isinstance(leaf, nn.Linear):
            ops.append({"op": "linear", "weight": f"{name}.weight", "bias": f"{name}.bias"})
        elif isinstance(leaf, nn.Conv2d):
            if leaf.groups != 1 or leaf.dilation != (1, 1) or not isinstance(leaf.padding, tuple):
                raise ExportError(f"{name}: only plain Conv2d layers (no groups, dilation or 'same') export")
            ops.append(
                {
                    "op": "conv2d",
                    "weight": f"{name}.weight",
                    "bias": f"{name}.bias",
                    "stride": list(leaf.stride),
                    "padding": list(leaf.padding),
                }
            )
        elif isinstance(leaf, nn.Flatten):
            ops.append({"op": "flatten"})
        elif type(leaf).__module__.startswith("torch.nn") and type(leaf)().extra_repr() == leaf.extra_repr():
            # A parameter-free torch module with default settings (ReLU, Tanh, ELU...): rebuilt by name.
            ops.append({"op": "activation", "name": type(leaf).__name__})
        else:
            raise ExportError(f"{name}: a {type(leaf).__name__} layer is not supported by the export")
    return ops


def actor_ops(policy: BasePolicy, algo: str) -> list[Op]:
    """The deterministic actor of ``policy`` as ops (parameter names refer to ``policy.state_dict()``).

    :param policy: an SB3 policy (rl_tickets' or SB3's class).
    :param algo: ppo, a2c, dqn, sac or td3.
    """
    observation_space, action_space = policy.observation_space, policy.action_space
    if not isinstance(observation_space, gym.spaces.Box):
        raise ExportError(f"only Box observation spaces export, not {observation_space}")
    ops: list[Op] = []
    if policy.normalize_images and is_image_space(observation_space):
        ops.append({"op": "scale", "factor": 1.0 / 255.0})
    for path in ACTOR_PATHS[algo]:
        ops += _leaf_ops(policy.get_submodule(path), path)
    if isinstance(action_space, gym.spaces.Discrete):
        return ops + [{"op": "argmax"}]
    if not isinstance(action_space, gym.spaces.Box):
        raise ExportError(f"only Discrete and Box action spaces export, not {action_space}")
    low = torch.as_tensor(action_space.low, dtype=torch.float32)
    high = torch.as_tensor(action_space.high, dtype=torch.float32)
    if algo == "sac":
        ops.append({"op": "activation", "name": "Tanh"})
    if algo in ("sac", "td3"):
        # SB3's unscale_action: [-1, 1] -> [low, high].
        return ops + [{"op": "rescale", "low": low, "high": high}]
    if getattr(policy, "squash_output", False):
        raise ExportError("squashed PPO/A2C outputs (gSDE) are not supported by the export")
    return ops + [{"op": "clip", "low": low, "high": high}]


class Scale(nn.Module):
    """Multiply by a constant (SB3's image normalisation, 1/255)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled input."""
        return x * self.factor


class Argmax(nn.Module):
    """The greedy discrete action."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Index of the largest logit or Q-value per row."""
        return x.argmax(dim=1)


class Bounded(nn.Module):
    """Clip to ``[low, high]``, or rescale ``[-1, 1]`` to it (``rescale=True``)."""

    def __init__(self, low: torch.Tensor, high: torch.Tensor, rescale: bool) -> None:
        super().__init__()
        self.register_buffer("low", low.clone())
        self.register_buffer("high", high.clone())
        self.rescale = rescale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The action within bounds."""
        if self.rescale:
            return self.low + 0.5 * (x + 1.0) * (self.high - self.low)
        return torch.maximum(torch.minimum(x, self.high), self.low)


class SparseLinear(nn.Module):
    """``x @ W.T + b`` with W a sparse CSR (or COO) matrix."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight, self.bias = weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Sparse matrix times the batch (as columns), plus the bias."""
        return torch.sparse.mm(self.weight, x.t()).t() + self.bias


class SparseConv2d(nn.Module):
    """A convolution as a sparse (out, in*kh*kw) matrix times unfolded patches."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, kernel: list[int], op: Op) -> None:
        super().__init__()
        self.weight, self.bias, self.kernel = weight, bias, kernel
        self.stride, self.padding = op["stride"], op["padding"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Unfold the input into patches and multiply them all at once."""
        batch, _, height, width = x.shape
        patches = F.unfold(x, self.kernel, padding=self.padding, stride=self.stride)  # (B, C*k*k, L)
        columns = patches.transpose(0, 1).reshape(patches.shape[1], -1)
        out = torch.sparse.mm(self.weight, columns).reshape(-1, batch, patches.shape[2]).transpose(0, 1)
        out_h = (height + 2 * self.padding[0] - self.kernel[0]) // self.stride[0] + 1
        out_w = (width + 2 * self.padding[1] - self.kernel[1]) // self.stride[1] + 1
        return out.reshape(batch, -1, out_h, out_w) + self.bias.view(1, -1, 1, 1)


def _layer(op: Op, tensors: Mapping[str, torch.Tensor], shapes: Mapping[str, list[int]]) -> nn.Module:
    """One Linear/Conv2d op as a dense torch layer, or a sparse one when its weight is sparse."""
    weight, bias = tensors[op["weight"]], tensors[op["bias"]]
    shape = list(shapes.get(op["weight"], weight.shape))
    if weight.layout != torch.strided:
        if op["op"] == "linear":
            return SparseLinear(weight, bias)
        return SparseConv2d(weight, bias, shape[2:], op)
    if op["op"] == "linear":
        layer: nn.Module = nn.Linear(shape[1], shape[0])
    else:
        layer = nn.Conv2d(shape[1], shape[0], shape[2:], stride=op["stride"], padding=op["padding"])
    with torch.no_grad():
        layer.weight.copy_(weight.reshape(shape))
        layer.bias.copy_(bias)
    return layer


def build_actor(
    ops: list[Op], tensors: Mapping[str, torch.Tensor], shapes: Mapping[str, list[int]] | None = None
) -> nn.Sequential:
    """The actor as a torch module: dense layers for dense weights, sparse matmuls for sparse ones.

    :param ops: from :func:`actor_ops`.
    :param tensors: parameters by name (a policy state dict, or ``sparse.pt``'s ``state_dict``).
    :param shapes: true shapes of weights stored flattened (sparse conv kernels).
    """
    modules: list[nn.Module] = []
    for op in ops:
        kind = op["op"]
        if kind in ("linear", "conv2d"):
            modules.append(_layer(op, tensors, shapes or {}))
        elif kind == "activation":
            modules.append(getattr(nn, op["name"])())
        elif kind == "flatten":
            modules.append(nn.Flatten())
        elif kind == "scale":
            modules.append(Scale(op["factor"]))
        elif kind == "argmax":
            modules.append(Argmax())
        else:
            modules.append(Bounded(op["low"], op["high"], rescale=kind == "rescale"))
    return nn.Sequential(*modules).eval()


def actor_parameters(ops: list[Op], state: Mapping[str, torch.Tensor]) -> tuple[int, int]:
    """``(all, nonzero)`` parameter counts of the actor's layers.

    :param ops: from :func:`actor_ops`.
    :param state: dense parameters by name.
    """
    names = [op[k] for op in ops if op["op"] in ("linear", "conv2d") for k in ("weight", "bias")]
    return sum(state[n].numel() for n in names), sum(int((state[n] != 0).sum()) for n in names)
