"""Frankle & Carbin (2019) models: weight counts, shapes, initialisation, layer names."""

import math
import re

import pytest
import torch
from torch import nn

from rl_tickets.supervised.models import (
    CONV_PATTERN,
    FC_PATTERN,
    MODELS,
    OUTPUT_LAYER,
    OUTPUT_PATTERN,
    build_model,
    conv_net,
)

ALLOWED = (nn.Sequential, nn.Linear, nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Flatten)


def weight_count(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))


@pytest.mark.parametrize(
    "name, input_shape, count",
    [
        ("lenet_300_100", (1, 28, 28), 266_200),
        ("conv2", (3, 32, 32), 4_300_992),
        ("conv4", (3, 32, 32), 2_425_024),
        ("conv6", (3, 32, 32), 2_261_184),
    ],
)
def test_weight_counts_match_the_paper_architectures(name, input_shape, count):
    model = build_model(name, input_shape, 10, seed=0)
    assert weight_count(model) == count
    assert all(isinstance(m, ALLOWED) for m in model.modules())


@pytest.mark.parametrize("name", list(MODELS))
def test_forward_shape_on_digits_input(name):
    model = build_model(name, (1, 8, 8), 10, seed=0)
    assert model(torch.rand(5, 1, 8, 8)).shape == (5, 10)


def test_forward_shape_on_cifar_input():
    assert build_model("conv4", (3, 32, 32), 7, seed=0)(torch.rand(2, 3, 32, 32)).shape == (2, 7)


def test_too_small_input_is_a_clear_error():
    with pytest.raises(ValueError, match="max-pools"):
        build_model("conv6", (1, 4, 4), 10, seed=0)
    with pytest.raises(ValueError, match="max-pools"):
        conv_net((64, 64), (1, 2, 2), 10)


def test_seed_fixes_weights_and_leaves_global_rng_alone():
    rng_state = torch.get_rng_state()
    a, b, c = (build_model("conv2", (1, 8, 8), 10, seed=s).state_dict() for s in (3, 3, 4))
    assert torch.equal(rng_state, torch.get_rng_state())
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not any(torch.equal(a[k], c[k]) for k in a if k.endswith("weight"))


def test_gaussian_glorot_init_and_zero_biases():
    model = build_model("conv2", (3, 32, 32), 10, seed=0)
    params = dict(model.named_parameters())
    big = params["classifier.0.weight"]  # 256 x 16384
    fan_out, fan_in = big.shape
    assert big.std().item() == pytest.approx(math.sqrt(2 / (fan_in + fan_out)), rel=0.01)
    assert abs(big.mean().item()) < 1e-4
    conv = params["features.2.weight"]  # 64 x 64 x 3 x 3: fans count the receptive field
    fan = 64 * 9
    assert conv.std().item() == pytest.approx(math.sqrt(2 / (fan + fan)), rel=0.03)
    assert all(torch.count_nonzero(p) == 0 for n, p in params.items() if n.endswith("bias"))


@pytest.mark.parametrize("name, convs", [("lenet_300_100", 0), ("conv2", 2), ("conv4", 4), ("conv6", 6)])
def test_layer_patterns_partition_the_weights(name, convs):
    model = build_model(name, (1, 8, 8), 10, seed=0)
    modules = dict(model.named_modules())
    names = [n for n, _ in model.named_parameters()]

    def matching(pattern):
        return [n for n in names if re.search(pattern, n)]

    output = matching(OUTPUT_PATTERN)
    assert output == [f"{OUTPUT_LAYER}.weight"]
    assert modules[OUTPUT_LAYER].out_features == 10
    conv, fc = matching(CONV_PATTERN), matching(FC_PATTERN)
    assert len(conv) == convs and all(isinstance(modules[n.rsplit(".", 1)[0]], nn.Conv2d) for n in conv)
    assert len(fc) == 2 and all(isinstance(modules[n.rsplit(".", 1)[0]], nn.Linear) for n in fc)
    # Disjoint, and together exactly the weights: per-layer overrides never overlap or miss one.
    assert sorted(conv + fc + output) == sorted(n for n in names if n.endswith("weight"))


def test_unknown_model_names_the_choices():
    with pytest.raises(ValueError, match="unknown model 'resnet'.*lenet_300_100, conv2, conv4, conv6"):
        build_model("resnet", (1, 8, 8), 10, seed=0)
