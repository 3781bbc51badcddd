"""Every Pillow mode and file format the loaders may meet keeps a gradient's levels and its
contrast in the tensor a model sees (8-bit images within what 8 bits hold; 16-bit and
float images beyond it), and a damaged or oversized file is named before any training."""

import numpy as np
import pytest
import torch
from PIL import Image

from biotune_optuna.finetuning.data import load_dataset
from biotune_optuna.finetuning.images import image_transform, open_image
from biotune_optuna.finetuning.names import DataError

SIZE = 64
RAMP = np.tile(np.linspace(0, 255, SIZE).round().astype(np.uint8), (SIZE, 1))  # 64 levels
DEEP = np.tile(np.linspace(1000, 4000, SIZE).round(), (SIZE, 1))  # 12 bits in 16


def gradient(mode: str) -> Image.Image:
    """A left-to-right gradient in ``mode``: 64 levels (2 for mode 1)."""
    grey = Image.fromarray(RAMP, "L")
    if mode == "1":
        return grey.point(lambda v: 255 * (v > 127)).convert("1")
    if mode in ("P", "PA"):
        indexed = Image.fromarray(RAMP, "P")
        indexed.putpalette([v for i in range(256) for v in (i, i, i)])
        return indexed if mode == "P" else indexed.convert("PA")
    if mode == "I;16":
        return Image.fromarray(DEEP.astype(np.uint16))
    if mode == "I":
        return Image.fromarray(DEEP.astype(np.int32) * 1000)
    if mode == "F":
        return Image.fromarray((DEEP / 4096).astype(np.float32))
    if mode == "CMYK":  # ink: the darker the more black
        return Image.merge("CMYK", [Image.new("L", grey.size, 0)] * 3
                           + [Image.fromarray(255 - RAMP, "L")])
    return grey.convert(mode)


# (format, suffix, mode); what each format can write
CASES = [("PNG", ".png", m) for m in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16")] + [
    ("TIFF", ".tif", m) for m in ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I",
                                 "F")] + [
    ("JPEG", ".jpg", m) for m in ("L", "RGB", "CMYK")] + [
    ("BMP", ".bmp", m) for m in ("1", "L", "P", "RGB")] + [
    ("GIF", ".gif", m) for m in ("L", "P")] + [
    ("WEBP", ".webp", m) for m in ("RGB", "RGBA")]
LOSSY = {"JPEG", "WEBP"}


@pytest.mark.parametrize("fmt,suffix,mode", CASES, ids=[f"{f}-{m}" for f, _, m in CASES])
def test_a_gradient_keeps_its_levels_and_contrast(tmp_path, fmt, suffix, mode):
    path = tmp_path / f"g{suffix}"
    extra = {"lossless": True} if fmt == "WEBP" and mode == "RGB" else {}
    gradient(mode).save(path, fmt, **({"quality": 95} if fmt in LOSSY else {}), **extra)
    tensor = open_image(path, image_transform(SIZE))
    assert tensor.shape == (3, SIZE, SIZE) and tensor.dtype == torch.float32
    assert 0.0 <= tensor.min() and tensor.max() <= 1.0
    row = tensor.mean(0)[SIZE // 2].numpy().astype(np.float64)
    levels = len(np.unique(row.round(6)))
    expected = 2 if mode == "1" else SIZE
    assert levels >= (0.75 * expected if fmt in LOSSY else expected), (levels, row[:8])
    contrast = 3000 / 4096 if mode == "F" else 1.0  # floats in [0, 1] are kept as they are
    assert row.max() - row.min() >= 0.9 * contrast  # not a clipped or dark band
    assert np.corrcoef(row, np.arange(SIZE))[0, 1] > 0.85 if mode == "1" else 0.99


def test_a_16_bit_image_is_scaled_by_its_range_and_a_float_one_kept_in_0_1(tmp_path):
    Image.fromarray(DEEP.astype(np.uint16)).save(tmp_path / "d.png")
    scan = open_image(tmp_path / "d.png", image_transform(SIZE))[0, 0]
    assert scan[0] == 0.0 and scan[-1] == 1.0  # 1000..4000 stretched to [0, 1]
    Image.fromarray(np.full((8, 8), 0.25, np.float32)).save(tmp_path / "f.tif")
    assert torch.allclose(open_image(tmp_path / "f.tif", image_transform(8)),
                          torch.tensor(0.25))


def write_folder(root, broken=None):
    for c, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(RAMP // (i + 4 * c + 1), "L").save(root / name / f"{i}.png")
    if broken is not None:
        broken(root / "dog")


def test_a_truncated_image_anywhere_is_named_when_the_dataset_loads(tmp_path):
    def truncate(folder):
        data = (folder / "3.png").read_bytes()
        (folder / "3.png").write_bytes(data[: len(data) // 2])

    write_folder(tmp_path, truncate)
    with pytest.raises(DataError, match=r"cannot read image .*dog/3\.png"):
        load_dataset(str(tmp_path), image_size=8)


def test_an_oversized_image_is_named_not_a_traceback(tmp_path, monkeypatch):
    write_folder(tmp_path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 is over twice that
    with pytest.raises(DataError, match=r"image .*\.png is too large to decode safely"):
        load_dataset(str(tmp_path), image_size=8)
