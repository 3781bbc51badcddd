"""Image files as float tensors, whatever their mode, and checked before a search trains.

8-bit images (modes 1, L, LA, P, PA, RGB, RGBA, CMYK, ...) become RGB and then [0, 1] by
/255, alpha dropped. Images of more than 8 bits (16-bit greyscale ``I;16``, 32-bit integer
``I``, float ``F``: the usual medical formats) would lose their levels that way (Pillow's RGB
conversion clips them), so they are scaled to [0, 1] as floats instead: integers by the range
the image uses (a 12-bit scan in a 16-bit file fills [0, 1]); floats kept as they are when
they lie in [0, 1] already, otherwise by their range too. A constant image becomes 0.
"""

from __future__ import annotations

import io
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from biotune_optuna.finetuning.names import DataError

SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def is_deep(mode: str) -> bool:
    """More than 8 bits per pixel in one channel: 16- and 32-bit integers, floats."""
    return mode in ("I", "F") or mode.startswith("I;16")


def _scaled(image):
    """A deep image as a mode-F image in [0, 1] (see the module's note)."""
    from PIL import Image

    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F" and values.size and 0.0 <= values.min() and values.max() <= 1.0:
        scaled = values
    else:
        low, high = (values.min(), values.max()) if values.size else (0.0, 0.0)
        scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return Image.fromarray(scaled.astype(np.float32), mode="F")


def _rgb_or_scaled(image):
    return _scaled(image) if is_deep(image.mode) else image.convert("RGB")


def _three_channels(tensor):
    return tensor.expand(3, -1, -1) if tensor.shape[0] == 1 else tensor


def image_transform(size: int, resize: int | None = None):
    """PIL image -> 3-channel float tensor of size x size in [0, 1]: resize the shorter
    side, centre crop (a deep image is resized as floats, keeping its levels)."""
    from torchvision import transforms

    return transforms.Compose([
        transforms.Lambda(_rgb_or_scaled),
        transforms.Resize(resize or size),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        transforms.Lambda(_three_channels),
    ])


def check_image(path: Path, data: bytes) -> None:
    """Decode the file's bytes ``data`` once, so a truncated, unreadable or oversized image
    is named before any training instead of failing a split later."""
    with _decoded(path, io.BytesIO(data)) as image:
        image.load()


def open_image(path: Path, transform):
    """The transformed image of a file already checked (a file changed since gets the
    same one-line error)."""
    with _decoded(path, path) as image:
        return transform(image)


@contextmanager
def _decoded(path: Path, source):
    """The image Pillow opens from ``source`` (the file at ``path`` or its bytes); what it
    cannot decode becomes a one-line error naming ``path``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as image:
            yield image
    except Image.DecompressionBombError as error:
        raise DataError(f"image {path} is too large to decode safely ({error}); downscale "
                        "it or remove it") from None
    except (OSError, SyntaxError, ValueError) as error:
        reason = ("cannot identify image file" if isinstance(error, UnidentifiedImageError)
                  else str(error).replace(f"'{path}'", "").replace(str(path), "").strip(" :"))
        raise DataError(f"cannot read image {path} ({reason or error.__class__.__name__}); "
                        "remove or fix the file") from None
