"""Emoji by category: a real RGB target that nobody here drew, offline once fetched.

The npm package ``emoji-datasource-google`` holds Google's emoji as 64 x 64 RGBA PNGs and,
in ``emoji.json``, each emoji's category (Smileys & Emotion, People & Body, Animals &
Nature, Food & Drink, Travel & Places, Activities, Objects, Symbols, Flags). About half of
its images are skin-tone variants of another emoji: near-copies that a split could put on
both sides of training and testing, so only the base emoji are kept (one image each), and
the five skin-tone swatches of the Component category are left out.

``python -m biotune_optuna.finetuning.emoji`` (or ``--dataset emoji --download``) fetches
the package with npm into the data cache; loading reads it from there.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch

from biotune_optuna.finetuning.names import DataError

PACKAGE, VERSION = "emoji-datasource-google", "16.0.0"
SIZE = 64
BACKGROUND = (255, 255, 255)  # what shows through transparent pixels
LEFT_OUT = ("Component",)


def archive(cache: Path) -> Path:
    return cache / "data" / f"{PACKAGE}-{VERSION}.tgz"


def fetch(cache: Path) -> Path:
    """The package's archive in the data cache, packed by npm first if absent."""
    target = archive(cache)
    if target.is_file():
        return target
    if shutil.which("npm") is None:
        raise DataError(f"the emoji set needs npm to fetch {PACKAGE}@{VERSION} once; install "
                        f"Node.js, or put {target.name} (npm pack {PACKAGE}@{VERSION}) at "
                        f"{target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as folder:
        done = subprocess.run(["npm", "pack", f"{PACKAGE}@{VERSION}", "--pack-destination",
                               folder], capture_output=True, text=True)
        packed = Path(folder) / target.name
        if done.returncode != 0 or not packed.is_file():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise DataError(f"npm could not fetch {PACKAGE}@{VERSION} ({last}); check the "
                            f"npm registry is reachable, or put its archive at {target}")
        packed.replace(target)  # whole or not at all: a later run never reads half a file
    return target


def load(cache: Path, download: bool = False) -> tuple[list[str], np.ndarray, torch.Tensor]:
    """Categories, labels and the base emoji as uint8 RGB images (N x 3 x 64 x 64)."""
    path = fetch(cache) if download else archive(cache)
    if not path.is_file():
        raise DataError(f"the emoji set is not in {path.parent}; fetch it once with `python "
                        "-m biotune_optuna.finetuning.emoji` or add --download (npm)")
    from PIL import Image

    folder = f"package/img/google/{SIZE}/"
    files = {}
    with tarfile.open(path) as package:  # read in one pass: a gzip stream cannot seek back
        for member in package:
            if member.name == "package/emoji.json" or member.name.startswith(folder):
                files[member.name] = package.extractfile(member).read()
    entries = json.loads(files["package/emoji.json"])
    kept = sorted((e for e in entries if e.get("has_img_google")
                   and e["category"] not in LEFT_OUT), key=lambda e: e["sort_order"])
    classes = list(dict.fromkeys(e["category"] for e in kept))
    images = []
    for entry in kept:
        with Image.open(io.BytesIO(files[folder + entry["image"]])) as image:
            flat = Image.new("RGBA", image.size, (*BACKGROUND, 255))
            flat.alpha_composite(image.convert("RGBA"))
            images.append(np.asarray(flat.convert("RGB").resize((SIZE, SIZE))))
    labels = np.array([classes.index(e["category"]) for e in kept], dtype=np.int64)
    return classes, labels, torch.as_tensor(np.stack(images)).permute(0, 3, 1, 2).contiguous()


if __name__ == "__main__":
    from biotune_optuna.finetuning.models import cache_dir

    try:
        print(fetch(cache_dir()))
    except DataError as error:
        print(f"biotune-optuna: error: {error}", file=sys.stderr)
        sys.exit(1)
