"""Supervised networks of Frankle & Carbin (2019): LeNet-300-100 and Conv-2/4/6.

Every model is an ``nn.Sequential`` built only from ``nn.Linear``, ``nn.Conv2d``, ReLU, MaxPool2d
and Flatten (no BatchNorm, no dropout), so the mask code, which masks every Linear/Conv2d weight,
reaches every layer and nothing else needs special handling.

Parameter names, as seen by ``model.named_parameters()``:

- conv layers: ``features.<i>.weight`` / ``.bias`` (Conv-2/4/6 only; LeNet has no ``features``);
- fully connected layers: ``classifier.<i>.weight`` / ``.bias``; every model has three Linear
  layers with a ReLU between each pair, so the output layer is always ``classifier.4``
  (``OUTPUT_LAYER``).

Regexes for per-layer pruning rates, matched against those parameter names (anchored, so
``re.search`` and ``re.fullmatch`` agree). They are disjoint and together cover every weight (no
bias), so the order in which regex->rate overrides are applied does not matter:

- ``CONV_PATTERN``: every conv weight (paper: 10% per level, Conv-6 15%);
- ``FC_PATTERN``: every hidden fully connected weight (paper: 20%);
- ``OUTPUT_PATTERN``: the output layer's weight (paper: 10%).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn

OUTPUT_LAYER = "classifier.4"
CONV_PATTERN = r"^features\.\d+\.weight$"
FC_PATTERN = r"^classifier\.(?!4\.)\d+\.weight$"
OUTPUT_PATTERN = r"^classifier\.4\.weight$"

# Hidden widths of the fully connected head (three Linear layers -> output is classifier.4).
LENET_HIDDEN = (300, 100)
CONV_HEAD_HIDDEN = (256, 256)


def _check_shape(input_shape: Sequence[int], num_classes: int) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (channels, height, width) with positive sizes, got {shape}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return shape  # type: ignore[return-value]


def scale_widths(widths: Sequence[int], width_scale: float) -> tuple[int, ...]:
    """Hidden widths multiplied by ``width_scale`` (at least one unit each): the small_dense control.

    :param widths: the paper's widths.
    :param width_scale: factor in (0, 1] (1 keeps the paper's architecture).
    """
    if width_scale <= 0:
        raise ValueError(f"width_scale must be > 0, got {width_scale}")
    return tuple(max(1, round(w * width_scale)) for w in widths)


def _classifier(in_features: int, hidden: Sequence[int], num_classes: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_features, width), nn.ReLU()]
        in_features = width
    layers.append(nn.Linear(in_features, num_classes))
    return nn.Sequential(*layers)


def lenet_300_100(input_shape: tuple[int, int, int], num_classes: int, width_scale: float = 1.0) -> nn.Module:
    """LeNet-300-100: flatten -> 300 -> 100 -> ``num_classes``, ReLU between layers.

    :param input_shape: (channels, height, width) of one input image.
    :param num_classes: number of output logits.
    :param width_scale: multiplies the hidden widths (small_dense control).
    :return: the model, with PyTorch's default initialisation (use ``build_model`` for Glorot).
    """
    channels, height, width = _check_shape(input_shape, num_classes)
    return nn.Sequential(
        OrderedDict(
            flatten=nn.Flatten(),
            classifier=_classifier(
                channels * height * width, scale_widths(LENET_HIDDEN, width_scale), num_classes
            ),
        )
    )


def conv_net(
    widths: Sequence[int], input_shape: tuple[int, int, int], num_classes: int, width_scale: float = 1.0
) -> nn.Module:
    """Conv-2/4/6 family: per width two 3x3 same-padded convs + ReLU, then a 2x2 max-pool; FC 256-256-out.

    Conv-2 is ``widths=(64,)``, Conv-4 ``(64, 128)``, Conv-6 ``(64, 128, 256)``.

    :param widths: channels of each conv pair.
    :param input_shape: (channels, height, width) of one input image; any size that survives the pools.
    :param num_classes: number of output logits.
    :param width_scale: multiplies conv channels and hidden FC widths (small_dense control).
    :return: the model, with PyTorch's default initialisation (use ``build_model`` for Glorot).
    :raises ValueError: if a max-pool would shrink the image to zero size.
    """
    channels, height, width = _check_shape(input_shape, num_classes)
    layers: list[nn.Module] = []
    for block, out_channels in enumerate(scale_widths(widths, width_scale)):
        if height < 2 or width < 2:
            raise ValueError(
                f"conv_net{tuple(widths)} needs {len(widths)} 2x2 max-pools, but a {tuple(input_shape)} "
                f"input is only {height}x{width} before pool {block + 1}: "
                "use fewer conv pairs or larger images"
            )
        layers += [
            nn.Conv2d(channels, out_channels, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]
        # Same padding keeps the size; the pool floors it, as PyTorch does.
        channels, height, width = out_channels, height // 2, width // 2
    return nn.Sequential(
        OrderedDict(
            features=nn.Sequential(*layers),
            flatten=nn.Flatten(),
            classifier=_classifier(
                channels * height * width, scale_widths(CONV_HEAD_HIDDEN, width_scale), num_classes
            ),
        )
    )


# (input_shape, num_classes, width_scale=1.0) -> model
MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet_300_100": lenet_300_100,
    "conv2": partial(conv_net, (64,)),
    "conv4": partial(conv_net, (64, 128)),
    "conv6": partial(conv_net, (64, 128, 256)),
}


def glorot_init_(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Gaussian Glorot (``xavier_normal_``) for every Linear/Conv2d weight, zero biases, in place.

    Draws only from ``generator``, so the global RNG is left alone.

    :param model: a model whose parameters all belong to Linear/Conv2d layers.
    :param generator: CPU generator to draw the weights from.
    :return: ``model``.
    :raises TypeError: if another kind of layer holds parameters (it would be left uninitialised).
    """
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.xavier_normal_(module.weight, generator=generator)
                if module.bias is not None:
                    module.bias.zero_()
            elif next(module.parameters(recurse=False), None) is not None:
                raise TypeError(f"glorot_init_ only knows Linear/Conv2d, but {name!r} is a {type(module)}")
    return model


def build_model(
    name: str, input_shape: tuple[int, int, int], num_classes: int, seed: int, width_scale: float = 1.0
) -> nn.Module:
    """Build a registered model on the CPU with Gaussian Glorot weights and zero biases.

    :param name: a key of ``MODELS``: lenet_300_100, conv2, conv4 or conv6.
    :param input_shape: (channels, height, width) of one input image.
    :param num_classes: number of output logits.
    :param seed: seeds a local ``torch.Generator``; the global RNG is not touched.
    :param width_scale: multiplies hidden widths (small_dense control); 1 is the paper's model.
    :return: the initialised model (move it with ``.to(device)``).
    :raises ValueError: on an unknown name or an input too small for the model.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    # Build on the meta device: no memory, and the default init draws nothing from the global RNG.
    with torch.device("meta"):
        model = MODELS[name](tuple(input_shape), num_classes, width_scale=width_scale)
    model = model.to_empty(device="cpu")
    return glorot_init_(model, torch.Generator().manual_seed(seed))
