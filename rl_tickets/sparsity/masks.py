"""Masks keyed by parameter name: attach them to a network, keep pruned weights at exactly zero.

The one invariant of this suite lives here: **a pruned weight is exactly 0.0 at every forward pass,
in online and target networks, after any optimizer step, load or rewind.**

How it holds:

- every ``nn.Linear`` / ``nn.Conv2d`` gets ``weight_mask`` (and ``bias_mask``) buffers *at construction*,
  all ones, so SB3's ``save``/``load`` round-trips them with ``strict=True`` loading;
- :func:`set_masks` copies a mask into the buffers in place (never replacing them, so optimizers,
  hooks and ``torch.compile`` keep seeing the same tensors), mirrors it onto the target network and
  multiplies the weights;
- :func:`enforce_after_steps` registers a post-step hook on each optimizer that re-zeroes the masked
  parameters *that optimizer owns* (one fused ``_foreach_mul_``). Zeroing once or masking gradients is
  not enough: Adam's stale moments move a zeroed weight again. Touching only the optimizer's own
  parameters matters for SAC, whose actor step follows the critic step inside one autograd graph.
- target networks are updated by polyak averaging of two tensors that are both zero where pruned,
  so they stay exactly zero.

A mask (:data:`Mask`) is a plain ``dict[str, torch.BoolTensor]`` keyed by the *online* parameter name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

Mask = dict[str, torch.Tensor]

MASKED_MODULES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d)

# SB3 names its target networks like this; a target carries its online network's mask (matched by
# module, see online_twins) and is left out of ranking and of the density count.
TARGET_PREFIXES: dict[str, str] = {
    "q_net_target.": "q_net.",
    "critic_target.": "critic.",
    "actor_target.": "actor.",
}


def is_target(name: str) -> bool:
    """Whether a parameter name belongs to a target network.

    :param name: a name from ``module.named_parameters()``.
    """
    return any(name.startswith(prefix) for prefix in TARGET_PREFIXES)


def online_name(name: str) -> str:
    """Map a target-network name to the same path under its online network (identity for online names).

    That path may reach a shared layer whose masks are keyed by another name: use :func:`online_twins`
    to find the name a target's mask comes from.

    :param name: a parameter name.
    """
    for target, online in TARGET_PREFIXES.items():
        if name.startswith(target):
            return online + name[len(target) :]
    return name


def online_twins(module: nn.Module) -> dict[str, str]:
    """Every target-network parameter's online twin, found by module: target name -> online name.

    A target is built by the same constructor as its online network, so the twin of the layer at
    ``critic_target.X`` is the layer at ``critic.X``. The twin is then named as :func:`prunable_names`
    names it, which is how masks are keyed: a layer shared by two online networks (SAC/TD3's
    ``share_features_extractor=True`` puts the actor's extractor inside the critic) is listed once,
    under its first name (``actor.features_extractor...``), so a name-only mapping would miss it.

    :param module: an SB3 policy (with or without target networks).
    """
    first_name = {id(sub): prefix for prefix, sub in module.named_modules()}
    twins: dict[str, str] = {}
    for prefix, sub in module.named_modules():
        if not is_target(prefix + ".") or next(sub.parameters(recurse=False), None) is None:
            continue
        online = module.get_submodule(online_name(prefix + ".")[:-1])
        for param_name, _ in sub.named_parameters(recurse=False):
            twins[f"{prefix}.{param_name}"] = f"{first_name[id(online)]}.{param_name}"
    return twins


def attach_masks(module: nn.Module) -> None:
    """Register all-ones ``weight_mask``/``bias_mask`` buffers on every Linear/Conv2d of ``module``.

    Call it at construction time (before any ``load_state_dict``) so checkpoints carry the masks.
    Idempotent: already-registered masks are kept.

    :param module: the network (an SB3 policy or a plain model).
    """
    for sub in module.modules():
        if not isinstance(sub, MASKED_MODULES) or hasattr(sub, "weight_mask"):
            continue
        sub.register_buffer("weight_mask", torch.ones_like(sub.weight, requires_grad=False))
        if sub.bias is not None:
            sub.register_buffer("bias_mask", torch.ones_like(sub.bias, requires_grad=False))


def _mask_buffers(module: nn.Module) -> dict[str, tuple[nn.Parameter, torch.Tensor]]:
    """Every masked parameter (online and target) by name, paired with its mask buffer."""
    pairs: dict[str, tuple[nn.Parameter, torch.Tensor]] = {}
    for prefix, sub in module.named_modules():
        if not isinstance(sub, MASKED_MODULES) or not hasattr(sub, "weight_mask"):
            continue
        stem = f"{prefix}." if prefix else ""
        pairs[stem + "weight"] = (sub.weight, sub.weight_mask)
        if sub.bias is not None:
            pairs[stem + "bias"] = (sub.bias, sub.bias_mask)
    return pairs


def prunable_names(module: nn.Module, include_biases: bool = False) -> list[str]:
    """Names of the online parameters that can be pruned, in ``named_modules`` order.

    :param module: a network with attached masks.
    :param include_biases: also list biases (not pruned by default).
    """
    names = [n for n in _mask_buffers(module) if not is_target(n)]
    return [n for n in names if include_biases or n.endswith("weight")]


def read_mask(module: nn.Module, include_biases: bool = False) -> Mask:
    """The module's current mask as boolean CPU tensors keyed by online parameter name.

    :param module: a network with attached masks.
    :param include_biases: include bias masks.
    """
    pairs = _mask_buffers(module)
    return {n: pairs[n][1].detach().bool().cpu().clone() for n in prunable_names(module, include_biases)}


def online_weights(module: nn.Module, include_biases: bool = False) -> dict[str, torch.Tensor]:
    """Detached CPU copies of the prunable online parameters.

    :param module: a network with attached masks.
    :param include_biases: include biases.
    """
    pairs = _mask_buffers(module)
    return {n: pairs[n][0].detach().cpu().clone() for n in prunable_names(module, include_biases)}


@torch.no_grad()
def set_masks(module: nn.Module, mask: Mapping[str, torch.Tensor]) -> None:
    """Copy ``mask`` into the module's buffers (online and target twins) and zero the pruned weights.

    Names absent from ``mask`` are reset to dense, so the module ends up with exactly this mask.

    :param module: a network with attached masks.
    :param mask: boolean tensors keyed by online parameter name.
    """
    pairs = _mask_buffers(module)
    unknown = set(mask) - {n for n in pairs if not is_target(n)}
    if unknown:
        raise KeyError(f"mask names not in the network: {sorted(unknown)[:5]}")
    twins = online_twins(module)
    for name, (param, buffer) in pairs.items():
        source = mask.get(twins.get(name, name))
        if source is None:
            buffer.fill_(1.0)
        else:
            if source.shape != buffer.shape:
                raise ValueError(
                    f"mask for {name} has shape {tuple(source.shape)}, expected {tuple(buffer.shape)}"
                )
            buffer.copy_(source.to(device=buffer.device, dtype=buffer.dtype))
        param.mul_(buffer)
    _refresh_enforcers(module)


# Second-moment state of Adam/RMSprop. A sparse network leaves many of these exactly 0 (units whose
# inputs are all pruned get no gradient), and CPU sqrt is ~5x slower on exact zeros than on normal
# floats (scripts/bench_optimizer_step.py: 178 vs 32 us for a 256x256 tensor). A floor
# of 1e-30 (sqrt 1e-15, far below Adam's eps 1e-8) keeps every update the same to float precision.
SECOND_MOMENTS = ("exp_avg_sq", "square_avg")
SECOND_MOMENT_FLOOR = 1e-30


def floor_second_moments(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> None:
    """Raise exact zeros in the optimizer's second moments of ``params`` to a tiny floor (speed only).

    :param optimizer: an Adam/RMSprop-like optimizer.
    :param params: the parameters whose state to touch.
    """
    moments = [
        state[k] for q in params if (state := optimizer.state.get(q)) for k in SECOND_MOMENTS if k in state
    ]
    if moments:
        torch._foreach_clamp_min_(moments, SECOND_MOMENT_FLOOR)


# Flooring every step would cost as much as it saves; a floored moment decays by beta2 per step and
# stays a normal float for thousands of steps, so every 64 steps is plenty.
FLOOR_EVERY = 64


class _Enforcer:
    """Post-step hook of one optimizer: re-zero its pruned parameters, and floor second moments.

    It holds (layer, "weight"|"bias") pairs rather than tensors: ``module.to(device)`` replaces buffer
    tensors, so masks are looked up on the layer at each call. Only tensors whose mask prunes
    something are touched (dense biases cost nothing); :meth:`refresh` recomputes that set and is
    called by :func:`set_masks` and after every ``load_state_dict``.
    """

    def __init__(self, slots: list[tuple[nn.Module, str]]) -> None:
        self.slots, self.active, self.steps = slots, list(slots), 0

    def refresh(self) -> None:
        """Recompute which tensors have pruned entries."""
        self.active = [
            (layer, name) for layer, name in self.slots if not bool(getattr(layer, f"{name}_mask").all())
        ]

    def __call__(self, optimizer: torch.optim.Optimizer, _args: object, _kwargs: object) -> None:
        with torch.no_grad():
            if self.active:
                params = [getattr(layer, name) for layer, name in self.active]
                torch._foreach_mul_(params, [getattr(layer, f"{name}_mask") for layer, name in self.active])
            self.steps += 1
            if self.steps % FLOOR_EVERY == 1:
                floor_second_moments(optimizer, [getattr(layer, name) for layer, name in self.slots])


def _refresh_enforcers(module: nn.Module) -> None:
    """Tell every enforcer on ``module`` that its masks may have changed."""
    for enforcer in getattr(module, "_mask_enforcers", ()):
        enforcer.refresh()


def enforce_after_steps(module: nn.Module, optimizers: Iterable[torch.optim.Optimizer]) -> None:
    """Re-zero pruned weights after every step of each optimizer, over its own parameters only.

    :param module: the network whose mask buffers are used.
    :param optimizers: optimizers over (parts of) ``module``.
    """
    slot_of = {}
    for sub in module.modules():
        if isinstance(sub, MASKED_MODULES) and hasattr(sub, "weight_mask"):
            slot_of[id(sub.weight)] = (sub, "weight")
            if sub.bias is not None:
                slot_of[id(sub.bias)] = (sub, "bias")
    enforcers = []
    for optimizer in optimizers:
        slots = [
            slot_of[id(p)] for group in optimizer.param_groups for p in group["params"] if id(p) in slot_of
        ]
        if not slots or getattr(optimizer, "_rl_tickets_enforced", False):
            continue
        enforcer = _Enforcer(slots)
        optimizer.register_step_post_hook(enforcer)
        optimizer._rl_tickets_enforced = True  # type: ignore[attr-defined]
        enforcers.append(enforcer)
    # A plain attribute (not a submodule or buffer): never saved, rebuilt with the policy.
    module.__dict__["_mask_enforcers"] = getattr(module, "_mask_enforcers", []) + enforcers
    if enforcers and not getattr(module, "_mask_load_hook", False):
        module.register_load_state_dict_post_hook(lambda mod, _keys: _refresh_enforcers(mod))
        module.__dict__["_mask_load_hook"] = True
    for enforcer in enforcers:
        enforcer.refresh()


def density(mask: Mapping[str, torch.Tensor]) -> float:
    """Fraction of weights kept over all tensors of ``mask``.

    :param mask: boolean tensors.
    """
    total = sum(m.numel() for m in mask.values())
    kept = sum(int(m.sum()) for m in mask.values())
    return kept / total if total else 1.0


def layer_densities(mask: Mapping[str, torch.Tensor]) -> list[tuple[str, int, float]]:
    """``(layer, numel, density)`` for every tensor of ``mask``.

    :param mask: boolean tensors.
    """
    return [(name, m.numel(), int(m.sum()) / m.numel()) for name, m in mask.items()]


def dense_mask(weights: Mapping[str, torch.Tensor]) -> Mask:
    """An all-kept mask shaped like ``weights``.

    :param weights: tensors keyed by name.
    """
    return {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}


def save_mask(mask: Mapping[str, torch.Tensor], path: Path) -> None:
    """Write a mask as a ``torch.save`` dict of bool tensors (loadable with ``weights_only=True``).

    :param mask: boolean tensors.
    :param path: destination file.
    """
    torch.save({name: m.bool().cpu() for name, m in mask.items()}, path)


def load_mask(path: Path) -> Mask:
    """Read a mask written by :func:`save_mask`.

    :param path: the ``mask.pt`` file.
    """
    return torch.load(path, map_location="cpu", weights_only=True)
