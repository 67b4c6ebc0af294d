"""``sparse.pt``: the surviving weights in torch's sparse CSR layout, with shapes and the actor's ops.

Everything in it is a tensor, a string, a number, a list or a dict, so ``torch.load(path,
weights_only=True)`` reads it without rl_tickets. Weights of two or more dimensions are stored as CSR
matrices of shape ``(out, in * kh * kw)`` with int32 indices (8 bytes per surviving weight instead of 4 per
weight: smaller below 50% density); biases and other tensors stay dense. ``shapes`` gives every tensor's
true shape, so ``t.to_dense().reshape(shapes[name])`` restores the dense state dict.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from rl_tickets.export.actor import Op

FORMAT = "rl_tickets.sparse/1"


def to_sparse(tensor: torch.Tensor) -> torch.Tensor:
    """A weight as an int32-indexed CSR matrix (out, rest); tensors of fewer than 2 dims stay dense.

    :param tensor: a dense tensor.
    """
    if tensor.dim() < 2:
        return tensor.detach().clone()
    with warnings.catch_warnings():
        # "Sparse CSR tensor support is in beta": the layout is what we want to store, not to train.
        warnings.simplefilter("ignore", UserWarning)
        csr = tensor.detach().reshape(tensor.shape[0], -1).to_sparse_csr()
        return torch.sparse_csr_tensor(
            csr.crow_indices().to(torch.int32),
            csr.col_indices().to(torch.int32),
            csr.values(),
            csr.shape,
        )


def sparse_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every tensor of a state dict through :func:`to_sparse`.

    :param state: a dense (plain) state dict.
    """
    return {name: to_sparse(tensor) for name, tensor in state.items()}


def bundle(
    algo: str, state: Mapping[str, torch.Tensor], ops: list[Op], policy_kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """The content of ``sparse.pt``.

    :param algo: ppo, a2c, dqn, sac or td3.
    :param state: the plain policy state dict (online and target networks).
    :param ops: the deterministic actor's ops (they name tensors of ``state``).
    :param policy_kwargs: the policy's kwargs; ``net_arch`` and the activation's name are kept.
    """
    activation = policy_kwargs.get("activation_fn")
    return {
        "format": FORMAT,
        "algo": algo,
        "layout": "sparse_csr",
        "state_dict": sparse_state(state),
        "shapes": {name: list(tensor.shape) for name, tensor in state.items()},
        "actor": ops,
        "net_arch": policy_kwargs.get("net_arch"),
        "activation_fn": activation.__name__ if activation is not None else None,
    }


def write_sparse(path: Path, content: dict[str, Any]) -> None:
    """Save :func:`bundle`'s output.

    :param path: ``sparse.pt``.
    :param content: from :func:`bundle`.
    """
    torch.save(content, path)


def load_sparse(path: Path) -> dict[str, Any]:
    """Read ``sparse.pt`` with ``weights_only=True`` (no code from the file runs).

    :param path: ``sparse.pt``.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.load(path, map_location="cpu", weights_only=True)


def dense_state(content: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The dense state dict back from ``sparse.pt`` (loads into the SB3 policy it came from).

    :param content: from :func:`load_sparse`.
    """
    shapes = content["shapes"]
    return {
        name: (t.to_dense() if t.layout != torch.strided else t).reshape(shapes[name])
        for name, t in content["state_dict"].items()
    }
