"""The emoji target: base emoji only (no skin-tone near-copy on both sides of a split), by
category, transparent pixels on a fixed background, fetched once with npm."""

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from biotune_optuna.finetuning import emoji
from biotune_optuna.finetuning.models import cache_dir
from biotune_optuna.finetuning.names import DataError


def png(colour, alpha=255):
    image = Image.new("RGBA", (emoji.SIZE, emoji.SIZE), (*colour, alpha))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def fake_package(cache):
    """An archive shaped as npm packs the real one: emoji.json and the 64 px images, with a
    skin-tone variant (listed under its base, not as an entry) and a component."""
    entries = [
        {"image": "b.png", "category": "Animals & Nature", "sort_order": 2,
         "has_img_google": True},
        {"image": "a.png", "category": "Smileys & Emotion", "sort_order": 1,
         "has_img_google": True,
         "skin_variations": {"1F3FB": {"image": "a-1f3fb.png", "has_img_google": True}}},
        {"image": "c.png", "category": "Smileys & Emotion", "sort_order": 3,
         "has_img_google": True},
        {"image": "tone.png", "category": "Component", "sort_order": 4,
         "has_img_google": True},
        {"image": "none.png", "category": "Symbols", "sort_order": 5,
         "has_img_google": False},
    ]
    files = {"package/emoji.json": json.dumps(entries).encode()}
    for name, colour in (("a", (200, 0, 0)), ("b", (0, 200, 0)), ("c", (0, 0, 200)),
                         ("a-1f3fb", (90, 60, 30)), ("tone", (9, 9, 9))):
        files[f"package/img/google/64/{name}.png"] = png(colour)
    files["package/img/google/64/c.png"] = png((0, 0, 200), alpha=0)  # see-through
    path = emoji.archive(cache)
    path.parent.mkdir(parents=True)
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_only_base_emoji_by_category_on_the_background(tmp_path):
    fake_package(tmp_path)
    classes, labels, images = emoji.load(tmp_path)
    assert classes == ["Smileys & Emotion", "Animals & Nature"]  # the package's order
    assert labels.tolist() == [0, 1, 0]  # a, b, c: no variant, no component, no missing image
    assert images.shape == (3, 3, 64, 64)
    assert images[0, :, 0, 0].tolist() == [200, 0, 0]
    assert images[2, :, 0, 0].tolist() == list(emoji.BACKGROUND)


def test_without_the_archive_one_line_says_how_to_fetch_it(tmp_path):
    with pytest.raises(DataError, match="python -m biotune_optuna.finetuning.emoji"):
        emoji.load(tmp_path)


def test_fetching_without_npm_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(emoji.shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="needs npm"):
        emoji.load(tmp_path, download=True)
    assert not emoji.archive(tmp_path).exists()


def test_the_real_set_has_1906_base_emoji_in_nine_categories():
    if not emoji.archive(cache_dir()).is_file():
        pytest.skip("the emoji set is not fetched (python -m biotune_optuna.finetuning.emoji)")
    classes, labels, images = emoji.load(cache_dir())
    assert len(classes) == 9 and "Component" not in classes
    assert np.bincount(labels).tolist() == [169, 386, 159, 131, 218, 85, 264, 224, 270]
    assert len({image.numpy().tobytes() for image in images}) > 1890  # base images differ
