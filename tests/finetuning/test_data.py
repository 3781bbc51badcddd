"""Datasets (built-in, image folder, CSV, torchvision by name from local files) and splits."""

import gzip
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from biotune_optuna.finetuning.data import FASHION_DIR, load_dataset
from biotune_optuna.finetuning.names import DataError
from biotune_optuna.finetuning.splits import make_splits

needs_fashion = pytest.mark.skipif(
    not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist is not installed")


def test_digits_are_mnist_like():
    data = load_dataset("digits")
    assert data.images.shape == (1797, 1, 28, 28)
    assert data.num_classes == 10
    assert float(data.images.min()) >= 0.0 and float(data.images.max()) <= 1.0
    assert float(data.images[:, :, :4].abs().max()) == 0.0  # the 4-pixel border is empty


def test_mnist5k_has_500_per_class():
    data = load_dataset("mnist5k")
    assert data.images.shape == (5000, 1, 28, 28) and data.images.dtype == torch.uint8
    assert np.bincount(data.labels).tolist() == [500] * 10
    x, y = data.tensors(np.array([0, 1]))
    assert x.dtype == torch.float32 and float(x.max()) <= 1.0 and y.shape == (2,)


@needs_fashion
def test_fashion_has_its_official_test_split():
    data = load_dataset("fashion")
    assert len(data) == 70_000 and len(data.test_pool) == 10_000
    splits = make_splits(data, shots=5, seed=0)
    assert set(splits.test) == set(data.test_pool)
    assert not set(splits.train) & set(data.test_pool)


def test_label_scarce_splits_are_stratified_disjoint_and_seeded():
    data = load_dataset("digits")
    splits = make_splits(data, shots=10, val_shots=5, seed=3)
    assert np.bincount(data.labels[splits.train]).tolist() == [10] * 10
    assert np.bincount(data.labels[splits.val]).tolist() == [5] * 10
    assert len(splits.train) + len(splits.val) + len(splits.test) == len(data)
    assert not (set(splits.train) & set(splits.val) or set(splits.val) & set(splits.test))
    again = make_splits(data, shots=10, val_shots=5, seed=3)
    other = make_splits(data, shots=10, val_shots=5, seed=4)
    assert np.array_equal(splits.train, again.train)
    assert not np.array_equal(splits.train, other.train)


def test_folds_are_disjoint_stratified_halves():
    data = load_dataset("digits")
    splits = make_splits(data, shots=10, seed=0)
    first, second = splits.fold(data.labels, 0, 2), splits.fold(data.labels, 1, 2)
    assert not set(first.train) & set(second.train)
    assert set(first.train) | set(second.train) == set(splits.train)
    assert np.bincount(data.labels[first.val]).tolist() == [5] * 10
    assert np.array_equal(first.test, splits.test)


def test_too_few_images_per_class_is_a_clear_error():
    with pytest.raises(DataError, match="200 to train and 200 to validate leave too few"):
        make_splits(load_dataset("digits"), shots=200)


def write_images(root, classes=("cat", "dog"), per_class=6, size=(20, 16)):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / c / f"{i}.png")


def test_image_folder_loads_at_the_requested_size(tmp_path):
    write_images(tmp_path)
    data = load_dataset(str(tmp_path), image_size=12)
    assert data.classes == ["cat", "dog"] and len(data) == 12
    x, y = data.tensors(np.arange(12))
    assert x.shape == (12, 3, 12, 12) and y.tolist() == [0] * 6 + [1] * 6
    splits = make_splits(data, shots=2, val_shots=2)
    assert len(splits.test) == 4


def test_empty_image_folder_is_a_one_line_error(tmp_path):
    (tmp_path / "cat").mkdir()
    with pytest.raises(DataError, match="has no images in class sub-folders"):
        load_dataset(str(tmp_path))


def test_unreadable_image_is_a_one_line_error(tmp_path):
    write_images(tmp_path)
    (tmp_path / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot read image .*broken.png \(cannot identify"):
        load_dataset(str(tmp_path), image_size=8)  # named before any training


def test_csv_of_paths_and_labels(tmp_path):
    write_images(tmp_path / "images")
    rows = ["path,label"] + [f"images/{c}/{i}.png,{c}" for c in ("cat", "dog") for i in range(6)]
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    data = load_dataset(str(tmp_path / "list.csv"), image_size=10)
    assert data.classes == ["cat", "dog"]
    assert np.bincount(data.labels).tolist() == [6, 6]
    (tmp_path / "bad.csv").write_text("images/cat/0.png,cat\nimages/missing.png,dog\n")
    with pytest.raises(DataError, match="1 images listed in .* do not exist"):
        load_dataset(str(tmp_path / "bad.csv"))


@needs_fashion
def test_torchvision_dataset_by_name_from_a_local_root(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in FASHION_DIR.glob("*.gz"):
        with gzip.open(f) as src, open(raw / f.stem, "wb") as dst:
            shutil.copyfileobj(src, dst)
    data = load_dataset("fashionmnist", root=tmp_path, image_size=28)
    assert data.name == "FashionMNIST" and len(data) == 70_000
    assert len(data.test_pool) == 10_000
    x, _ = data.tensors(np.array([0, 60_000]))
    assert x.shape == (2, 3, 28, 28)


def test_torchvision_dataset_missing_locally_says_how_to_fix(tmp_path):
    with pytest.raises(DataError, match="not found in .*add --download"):
        load_dataset("CIFAR10", root=tmp_path)
    with pytest.raises(DataError, match="needs --data-root"):
        load_dataset("CIFAR10")


def test_unknown_dataset_is_a_one_line_error():
    with pytest.raises(DataError, match="unknown dataset 'nosuchset'"):
        load_dataset("nosuchset")


@pytest.mark.parametrize("header", ["", "filepath,class\n", "image,label\n", "# paths\n"])
def test_a_csv_header_of_any_name_is_not_read_as_an_image(tmp_path, header):
    write_images(tmp_path / "images")
    rows = [f"images/{c}/{i}.png,{c}" for c in ("cat", "dog") for i in range(6)]
    (tmp_path / "list.csv").write_text(header + "\n".join(rows) + "\n")
    data = load_dataset(str(tmp_path / "list.csv"), image_size=10)
    assert data.classes == ["cat", "dog"] and len(data) == 12 and not data.notes


def test_csv_columns_given_as_label_then_path_are_read_so_with_a_note(tmp_path):
    write_images(tmp_path / "images")
    rows = ["class,filepath"] + [f"{c},images/{c}/{i}.png" for c in ("cat", "dog")
                                 for i in range(6)]
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    data = load_dataset(str(tmp_path / "list.csv"), image_size=10)
    assert data.classes == ["cat", "dog"] and np.bincount(data.labels).tolist() == [6, 6]
    assert any("'label,path'" in note for note in data.notes)


def test_a_csv_row_without_a_label_is_refused_naming_its_line(tmp_path):
    write_images(tmp_path / "images")
    rows = ["path,label", "images/cat/0.png,cat", "images/cat/1.png,", "images/dog/0.png,dog"]
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"line 3 of .*list.csv has no label"):
        load_dataset(str(tmp_path / "list.csv"), image_size=10)
