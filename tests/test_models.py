from __future__ import annotations

import re
import sys
import zipfile
from pathlib import Path

import matplotlib.cbook
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from lam_captum.models import (
    EDSR,
    CompactSR,
    ModelSpec,
    build_model,
    builtin_model_names,
    edsr_baseline,
    load_model,
    load_weights,
    parse_model_spec,
)

WEIGHTS_FILE = Path(__file__).resolve().parents[1] / "lam_captum" / "models" / "weights" / "default_x4.pt"
CALLS_FROM_UNPICKLING: list[str] = []


def _record_call(message: str) -> None:
    CALLS_FROM_UNPICKLING.append(message)


class CodeRunningPayload:
    """Unpickling this calls a function: what a malicious checkpoint would do."""

    def __reduce__(self):
        return _record_call, ("unpickling ran code",)


def tiny_edsr(scale: int = 4, **kwargs) -> EDSR:
    return EDSR(scale=scale, n_resblocks=2, n_feats=8, **kwargs)


def expected_edsr_keys(scale: int, n_resblocks: int) -> set[str]:
    layers = ["sub_mean", "head.0", "body.{n}", "tail.1", "add_mean"]
    layers += [f"body.{i}.body.{j}" for i in range(n_resblocks) for j in (0, 2)]
    layers += [f"tail.0.{2 * i}" for i in range({2: 1, 3: 1, 4: 2, 8: 3}[scale])]
    return {f"{layer.format(n=n_resblocks)}.{kind}" for layer in layers for kind in ("weight", "bias")}


# --- EDSR ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_edsr_state_dict_keys_follow_edsr_pytorch(scale):
    assert set(tiny_edsr(scale).state_dict()) == expected_edsr_keys(scale, n_resblocks=2)


def test_edsr_x3_state_dict_literally():
    state_dict = EDSR(scale=3, n_resblocks=1, n_feats=4).state_dict()
    layers = ["sub_mean", "head.0", "body.0.body.0", "body.0.body.2", "body.1", "tail.0.0", "tail.1", "add_mean"]
    assert list(state_dict) == [f"{layer}.{kind}" for layer in layers for kind in ("weight", "bias")]
    assert state_dict["tail.0.0.weight"].shape == (36, 4, 3, 3)
    assert state_dict["tail.1.weight"].shape == (3, 4, 3, 3)


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_edsr_power_of_two_upsampler_quadruples_channels(scale):
    upsampler_convs = [m for m in tiny_edsr(scale).tail[0] if isinstance(m, nn.Conv2d)]
    assert [conv.out_channels for conv in upsampler_convs] == [32] * {2: 1, 4: 2, 8: 3}[scale]


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_edsr_output_shape(scale):
    assert tiny_edsr(scale)(torch.rand(2, 3, 5, 7)).shape == (2, 3, 5 * scale, 7 * scale)


def test_edsr_grayscale_output_shape():
    assert tiny_edsr(2, n_colors=1)(torch.rand(1, 1, 6, 6)).shape == (1, 1, 12, 12)


def test_mean_shift_is_frozen_but_passes_input_gradients():
    model = tiny_edsr()
    assert not any(p.requires_grad for p in [*model.sub_mean.parameters(), *model.add_mean.parameters()])
    lr = torch.rand(1, 3, 6, 6, requires_grad=True)
    (grad,) = torch.autograd.grad(model(lr).sum(), lr)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("rgb_range", [1.0, 255.0])
def test_mean_shift_bias_is_scaled_mean(rgb_range):
    model = tiny_edsr(rgb_range=rgb_range)
    mean = torch.tensor([0.4488, 0.4371, 0.4040])
    torch.testing.assert_close(model.sub_mean.bias, -rgb_range * mean)
    torch.testing.assert_close(model.add_mean.bias, rgb_range * mean)


def test_rgb_range_255_weights_give_the_same_output_as_rgb_range_1():
    torch.manual_seed(0)
    model_1 = tiny_edsr(rgb_range=1.0).double()
    model_255 = tiny_edsr(rgb_range=255.0).double()
    # ReLU is positively homogeneous, so scaling every bias (the mean shifts excepted) by 255
    # expresses the same network on [0, 255] images.
    converted = {
        key: value * 255 if key.endswith("bias") else value
        for key, value in model_1.state_dict().items()
        if "mean" not in key
    }
    model_255.load_state_dict(converted, strict=False)
    lr = torch.rand(1, 3, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(model_255(lr), model_1(lr))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scale": 5}, "`scale` must be 2, 3, 4 or 8, got 5"),
        ({"n_resblocks": 0}, "`n_resblocks` must be a positive integer, got 0"),
        ({"n_feats": 2.5}, "`n_feats` must be a positive integer, got 2.5"),
        ({"res_scale": 0}, "`res_scale` must be positive, got 0"),
        ({"rgb_range": -1}, "`rgb_range` must be positive"),
        ({"n_colors": 2}, "`n_colors` must be 1 or 3, got 2"),
    ],
)
def test_edsr_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        EDSR(**kwargs)


def test_presets():
    baseline = build_model("edsr-baseline", scale=3)
    assert (len(baseline.body) - 1, baseline.head[0].out_channels, baseline.body[0].res_scale) == (16, 64, 1.0)
    full = build_model("edsr", scale=2)
    assert (len(full.body) - 1, full.head[0].out_channels, full.body[0].res_scale) == (32, 256, 0.1)
    assert not full.training


def test_build_model_passes_edsr_options_through():
    model = build_model("edsr-baseline", scale=2, rgb_range=255, n_resblocks=2)
    assert (model.rgb_range, len(model.body)) == (255.0, 3)


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("edsr-small", {}, "`name` must be one of ['default', 'edsr', 'edsr-baseline'], got 'edsr-small'"),
        ("default", {"scale": 2}, "`scale` must be 4 for the 'default' model"),
        ("default", {"rgb_range": 255}, "takes no options, got ['rgb_range']"),
        ("edsr", {"scale": 6}, "`scale` must be 2, 3, 4 or 8, got 6"),
    ],
)
def test_build_model_rejects_bad_arguments(name, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build_model(name, **kwargs)


def test_builtin_model_names():
    assert builtin_model_names() == ["default", "edsr", "edsr-baseline"]


# --- load_weights -------------------------------------------------------------------------------


def _random_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: torch.randn_like(value) for key, value in model.state_dict().items()}


def _assert_loaded(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state_dict[key])


@pytest.mark.parametrize(
    "layout",
    [
        lambda sd: sd,
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
        lambda sd: {"params": sd},
        lambda sd: {"params_ema": sd, "params": {k: v + 1 for k, v in sd.items()}},
        lambda sd: {"state_dict": {f"model.{k}": v for k, v in sd.items()}, "epoch": 3, "hyper_parameters": {}},
        lambda sd: {"state_dict": {**{f"net.{k}": v for k, v in sd.items()}, "loss.weight": torch.ones(1)}},
    ],
    ids=["plain", "ddp", "basicsr-params", "basicsr-params-ema", "lightning-model", "lightning-net-and-loss"],
)
def test_load_weights_reads_each_checkpoint_layout(tmp_path, layout):
    source = _random_state_dict(tiny_edsr())
    torch.save(layout(source), tmp_path / "weights.pth")
    _assert_loaded(load_weights(tiny_edsr(), tmp_path / "weights.pth"), source)


def test_load_weights_casts_half_precision_to_the_model_dtype(tmp_path):
    source = {key: value.half() for key, value in _random_state_dict(tiny_edsr()).items()}
    torch.save(source, tmp_path / "half.pt")
    model = load_weights(tiny_edsr(), str(tmp_path / "half.pt"))
    assert model.head[0].weight.dtype == torch.float32
    _assert_loaded(model, {key: value.float() for key, value in source.items()})


def test_load_weights_lists_missing_and_unexpected_keys(tmp_path):
    source = _random_state_dict(tiny_edsr())
    del source["tail.1.weight"], source["tail.1.bias"]
    source.update({f"extra.{i}": torch.zeros(1) for i in range(7)})
    torch.save(source, tmp_path / "mismatch.pt")
    with pytest.raises(ValueError, match="2 missing keys") as info:
        load_weights(tiny_edsr(), tmp_path / "mismatch.pt")
    message = str(info.value)
    assert "'tail.1.bias', 'tail.1.weight'" in message
    assert "7 unexpected keys ['extra.0'" in message and "(2 more)" in message
    assert str(tmp_path / "mismatch.pt") in message


def test_load_weights_non_strict_loads_the_common_keys(tmp_path):
    source = _random_state_dict(tiny_edsr())
    del source["tail.1.weight"]
    torch.save({**source, "extra": torch.zeros(1)}, tmp_path / "partial.pt")
    model = load_weights(tiny_edsr(), tmp_path / "partial.pt", strict=False)
    torch.testing.assert_close(model.head[0].weight, source["head.0.weight"])


def test_load_weights_rejects_weights_of_another_scale(tmp_path):
    torch.save(_random_state_dict(tiny_edsr(scale=2)), tmp_path / "x2.pt")
    with pytest.raises(ValueError, match=re.escape("2 missing keys ['tail.0.2.bias', 'tail.0.2.weight']")):
        load_weights(tiny_edsr(scale=4), tmp_path / "x2.pt")


def test_load_weights_names_a_shape_mismatch(tmp_path):
    torch.save(_random_state_dict(EDSR(scale=4, n_resblocks=2, n_feats=4)), tmp_path / "narrow.pt")
    message = "'body.0.body.0.bias' has shape (4,) in the checkpoint but (8,) in the model"
    with pytest.raises(ValueError, match=re.escape(message)):
        load_weights(tiny_edsr(scale=4), tmp_path / "narrow.pt", strict=False)


def test_load_weights_refuses_to_unpickle_arbitrary_objects(tmp_path):
    path = tmp_path / "malicious.pt"
    torch.save({"state_dict": _random_state_dict(tiny_edsr()), "payload": CodeRunningPayload()}, path)
    with pytest.raises(ValueError, match=r"refusing to load .*\(.*_record_call\).*could run code") as info:
        load_weights(tiny_edsr(), path)
    assert str(path) in str(info.value)
    assert CALLS_FROM_UNPICKLING == []


def test_load_weights_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nowhere.pt"))):
        load_weights(tiny_edsr(), tmp_path / "nowhere.pt")


def _write_zip_without_torch_data(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "not a checkpoint")


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda path: path.write_text("not a checkpoint"), "is not a torch checkpoint"),
        (_write_zip_without_torch_data, "is not a readable torch checkpoint"),
    ],
    ids=["text", "zip"],
)
def test_load_weights_rejects_a_file_that_is_not_a_checkpoint(tmp_path, write, message):
    write(tmp_path / "notes.pt")
    with pytest.raises(ValueError, match=message) as info:
        load_weights(tiny_edsr(), tmp_path / "notes.pt")
    assert str(tmp_path / "notes.pt") in str(info.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [(torch.zeros(3), "holds no state dict, got Tensor"), ({"epoch": 3}, "entries ['epoch'] are not tensors")],
)
def test_load_weights_rejects_a_checkpoint_without_a_state_dict(tmp_path, content, message):
    torch.save(content, tmp_path / "odd.pt")
    with pytest.raises(ValueError, match=re.escape(message)):
        load_weights(tiny_edsr(), tmp_path / "odd.pt")


def test_build_model_loads_given_weights(tmp_path):
    source = _random_state_dict(EDSR(scale=2, n_resblocks=2))
    torch.save({"params": source}, tmp_path / "edsr_x2.pth")
    model = build_model("edsr-baseline", scale=2, n_resblocks=2, weights=tmp_path / "edsr_x2.pth")
    _assert_loaded(model, source)


# --- load_model ----------------------------------------------------------------------------

MODEL_FILE = """
from torch import nn
from helper_blocks import WIDTH

class Net(nn.Module):
    def __init__(self, scale: int = 2, width: int = WIDTH):
        super().__init__()
        self.scale = scale
        self.body = nn.Conv2d(3, 3 * scale**2, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x):
        return self.shuffle(self.body(x))

def make_tuple():
    return (1, 2)

NOT_CALLABLE = 3
"""


@pytest.fixture
def model_file(tmp_path) -> Path:
    (tmp_path / "helper_blocks.py").write_text("WIDTH = 4\n")
    (tmp_path / "my_sr.py").write_text(MODEL_FILE)
    return tmp_path / "my_sr.py"


def test_load_model_from_a_module():
    model = load_model("lam_captum.models:EDSR", {"scale": 2, "n_resblocks": 1, "n_feats": 4})
    assert isinstance(model, EDSR) and model.scale == 2 and not model.training


def test_load_model_from_a_file(model_file):
    model = load_model(f"{model_file}:Net", {"scale": 3})
    assert model(torch.rand(1, 3, 4, 4)).shape == (1, 3, 12, 12)


def test_load_model_builtin_name():
    assert load_model("edsr-baseline", {"scale": 2, "n_resblocks": 1}).scale == 2


@pytest.mark.parametrize(
    ("spec", "model_args", "error", "message"),
    [
        ("edsr_small", None, ValueError, "`spec` must be a built-in model name"),
        ("no_such_package_xyz.models:Net", None, ImportError, "No module named 'no_such_package_xyz'"),
        ("lam_captum.models:NoSuchNet", None, ImportError, "has no attribute 'NoSuchNet'"),
        ("{file}:NoSuchNet", None, ImportError, "has no attribute 'NoSuchNet'"),
        ("{dir}/missing.py:Net", None, ImportError, "does not exist"),
        ("{file}:NOT_CALLABLE", None, ValueError, "names a int, which is not a class or function"),
        ("{file}:make_tuple", None, ValueError, "built a tuple, not a torch.nn.Module"),
        ("{file}:Net", {"scale": 2, "depth": 9}, ValueError, "`model_args` {'scale': 2, 'depth': 9} do not fit Net"),
    ],
)
def test_load_model_errors(model_file, spec, model_args, error, message):
    spec = spec.format(file=model_file, dir=model_file.parent)
    with pytest.raises(error, match=re.escape(message)) as info:
        load_model(spec, model_args)
    assert spec in str(info.value)


def test_load_model_rejects_model_args_that_are_not_a_mapping():
    message = "`model_args` must be a mapping of argument names to values, got [2]"
    with pytest.raises(ValueError, match=re.escape(message)):
        load_model("edsr", [2])


def test_load_model_reports_a_file_that_fails_to_import(tmp_path):
    (tmp_path / "broken.py").write_text("import no_such_dependency_xyz\n")
    with pytest.raises(ImportError, match="No module named 'no_such_dependency_xyz'"):
        load_model(f"{tmp_path / 'broken.py'}:Net")


# --- the default model --------------------------------------------------------------------------


def _psnr(estimate: np.ndarray, target: np.ndarray, border: int = 4) -> float:
    crop = (slice(border, -border), slice(border, -border))
    return float(10 * np.log10(1 / np.mean((np.clip(estimate, 0, 1)[crop] - target[crop]) ** 2)))


def test_default_model_beats_bicubic_on_the_held_out_photo():
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as file:
        hr = np.array(Image.open(file).convert("RGB"))[120:248, 220:348]
    lr = Image.fromarray(hr).resize((32, 32), Image.BICUBIC)
    bicubic = np.asarray(lr.resize((128, 128), Image.BICUBIC)) / 255
    lr_tensor = torch.from_numpy(np.asarray(lr) / 255).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        sr = build_model("default")(lr_tensor)[0].permute(1, 2, 0).double().numpy()
    assert _psnr(sr, hr / 255) > _psnr(bicubic, hr / 255) + 1.0


def test_default_model_weights_are_packaged_and_small():
    assert WEIGHTS_FILE.stat().st_size <= 2 * 1024**2
    model = build_model("default")
    assert isinstance(model, CompactSR) and not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_default_model_sees_a_wide_neighbourhood():
    # LAM needs input gradients reaching beyond the bicubic kernel's few pixels.
    lr = torch.rand(1, 3, 48, 48, requires_grad=True)
    (grad,) = torch.autograd.grad(build_model("default")(lr)[..., 96:100, 96:100].sum(), lr)
    rows = torch.nonzero(grad.abs().sum(dim=(0, 1, 3)) > 0).flatten()
    assert rows.max() - rows.min() + 1 >= 24


def test_edsr_baseline_preset_parameter_count():
    assert sum(p.numel() for p in edsr_baseline(4).parameters() if p.requires_grad) == 1_517_571


# --- safetensors weights ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layout",
    [
        lambda sd: sd,
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
        lambda sd: {**{f"params_ema.{k}": v for k, v in sd.items()}, **{f"params.{k}": v + 1 for k, v in sd.items()}},
        lambda sd: {**{f"model.{k}": v for k, v in sd.items()}, "loss.weight": torch.ones(1)},
    ],
    ids=["plain", "ddp", "basicsr-params-ema-flat", "lightning-model-flat"],
)
def test_load_weights_reads_safetensors_with_the_same_key_handling(tmp_path, layout):
    from safetensors.torch import save_file

    source = _random_state_dict(tiny_edsr())
    save_file({key: value.contiguous() for key, value in layout(source).items()}, tmp_path / "weights.safetensors")
    _assert_loaded(load_weights(tiny_edsr(), tmp_path / "weights.safetensors"), source)


def test_safetensors_are_recognised_by_content_and_half_precision_is_cast(tmp_path):
    from safetensors.torch import save_file

    source = {key: value.half() for key, value in _random_state_dict(tiny_edsr()).items()}
    save_file(source, tmp_path / "exported.bin")
    model = load_weights(tiny_edsr(), tmp_path / "exported.bin")
    assert model.head[0].weight.dtype == torch.float32
    _assert_loaded(model, {key: value.float() for key, value in source.items()})


def test_a_damaged_safetensors_file_is_named(tmp_path):
    from safetensors.torch import save_file

    save_file(_random_state_dict(tiny_edsr()), tmp_path / "weights.safetensors")
    content = (tmp_path / "weights.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(content[: len(content) // 2])
    with pytest.raises(ValueError, match=r"cut\.safetensors' is not a readable safetensors file"):
        load_weights(tiny_edsr(), tmp_path / "cut.safetensors")


def test_a_file_in_no_weight_format_lists_the_accepted_formats(tmp_path):
    (tmp_path / "weights.onnx").write_bytes(b"\x08\x07\x12\x07pytorch")
    with pytest.raises(ValueError) as info:
        load_weights(tiny_edsr(), tmp_path / "weights.onnx")
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "weights.onnx") in message
    assert "is not a torch checkpoint nor a safetensors file" in message
    assert "(.pt, .pth, .ckpt" in message and "(.safetensors)" in message


def test_load_model_takes_safetensors_weights(tmp_path):
    from safetensors.torch import save_file

    source = _random_state_dict(EDSR(scale=2, n_resblocks=1, n_feats=4))
    save_file(source, tmp_path / "edsr.safetensors")
    model = load_model("lam_captum.models:EDSR", {"scale": 2, "n_resblocks": 1, "n_feats": 4},
                       weights=tmp_path / "edsr.safetensors")
    _assert_loaded(model, source)
    assert not model.training


# --- load_model: spec, arguments, weights, scale --------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("edsr", ModelSpec("builtin", "edsr")),
        ("torch.nn:Conv2d", ModelSpec("module", "torch.nn", "Conv2d")),
        ("pkg.mod:Outer.Inner", ModelSpec("module", "pkg.mod", "Outer.Inner")),
        ("archs/rcan_arch.py:RCAN", ModelSpec("file", "archs/rcan_arch.py", "RCAN")),
        ("C:\\sr\\net.py:Net", ModelSpec("file", "C:\\sr\\net.py", "Net")),
    ],
)
def test_parse_model_spec_forms(spec, expected):
    assert parse_model_spec(spec) == expected
    assert str(parse_model_spec(spec)) == spec


@pytest.mark.parametrize(
    ("spec", "error", "message"),
    [
        ("edsr_small", ValueError, "`spec` must be a built-in model name ['default', 'edsr', 'edsr-baseline']"),
        ("net.py:", ValueError, "`spec` must be a built-in model name"),
        ("net.py:3Net", ValueError, "'3Net' after ':' in `spec` 'net.py:3Net' is not a class or function name"),
        ("my-package.net:Net", ValueError, "'my-package.net' before ':' in `spec` 'my-package.net:Net' is neither"),
        (3, TypeError, "`spec` must be a string, got int"),
    ],
)
def test_parse_model_spec_rejects(spec, error, message):
    with pytest.raises(error, match=re.escape(message)):
        parse_model_spec(spec)


def test_load_model_builds_a_builtin_at_the_given_scale_with_weights(tmp_path):
    source = _random_state_dict(EDSR(scale=3, n_resblocks=1))
    torch.save(source, tmp_path / "edsr_x3.pt")
    model = load_model("edsr-baseline", {"n_resblocks": 1}, weights=tmp_path / "edsr_x3.pt", scale=3)
    assert model.scale == 3 and not model.training
    _assert_loaded(model, source)
    assert load_model("edsr-baseline", {"n_resblocks": 1, "scale": 2}, scale=2).scale == 2


def test_load_model_refuses_a_scale_given_twice_differently():
    message = "`scale` is 4, but `model_args` set scale=2; give it once"
    with pytest.raises(ValueError, match=re.escape(message)):
        load_model("edsr-baseline", {"scale": 2, "n_resblocks": 1}, scale=4)


def test_load_model_does_not_pass_scale_to_a_class(model_file):
    model = load_model(f"{model_file}:Net", scale=4)
    assert model.scale == 2


def test_load_model_reports_an_attribute_error_raised_while_importing(tmp_path, monkeypatch):
    (tmp_path / "breaks_on_import.py").write_text("import torch\ntorch.no_such_function_xyz()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match="cannot import module 'breaks_on_import'.*AttributeError.*no_such_function"):
        load_model("breaks_on_import:Net")


def test_load_model_resolves_a_nested_attribute():
    assert isinstance(load_model("torch.nn:Module"), nn.Module)
    with pytest.raises(ImportError, match=re.escape("'torch.nn' has no attribute 'Conv2d.Missing'")):
        load_model("torch.nn:Conv2d.Missing")


# --- model files inside a package (BasicSR's layout) ----------------------------------------------

PACKAGE_NAME = "srzoo_under_test"
PACKAGE_FILES = {
    "__init__.py": "",
    "utils.py": "WIDTH = 6\n",
    "archs/__init__.py": "",
    "archs/common.py": (
        "from torch import nn\n"
        "from ..utils import WIDTH\n"
        "class Block(nn.Sequential):\n"
        "    def __init__(self, channels=WIDTH):\n"
        "        super().__init__(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU())\n"
    ),
    "archs/rcan_arch.py": (
        "from torch import nn\n"
        f"from {PACKAGE_NAME}.utils import WIDTH\n"
        "from .common import Block\n"
        "from ..utils import WIDTH as SAME_WIDTH\n"
        "class RCAN(nn.Module):\n"
        "    def __init__(self, scale=2):\n"
        "        super().__init__()\n"
        "        self.scale = scale\n"
        "        self.head = nn.Conv2d(3, WIDTH, 3, padding=1)\n"
        "        self.body = Block(SAME_WIDTH)\n"
        "        self.tail = nn.Sequential(nn.Conv2d(WIDTH, 3 * scale**2, 3, padding=1), nn.PixelShuffle(scale))\n"
        "    def forward(self, x):\n"
        "        return self.tail(self.body(self.head(x)))\n"
    ),
    "archs/broken_arch.py": "from .no_such_sibling import Block\n",
}


def _write_package(root: Path) -> Path:
    for name, text in PACKAGE_FILES.items():
        (root / PACKAGE_NAME / name).parent.mkdir(parents=True, exist_ok=True)
        (root / PACKAGE_NAME / name).write_text(text)
    return root / PACKAGE_NAME / "archs" / "rcan_arch.py"


@pytest.fixture
def package_model(tmp_path):
    """``rcan_arch.py`` inside a package tree with relative imports; the package is forgotten afterwards."""
    yield _write_package(tmp_path / "repo")
    for name in [name for name in sys.modules if name.partition(".")[0] == PACKAGE_NAME]:
        del sys.modules[name]


def test_a_file_inside_a_package_is_imported_as_part_of_it(package_model):
    path_before = list(sys.path)
    model = load_model(f"{package_model}:RCAN", {"scale": 3})
    assert type(model).__module__ == f"{PACKAGE_NAME}.archs.rcan_arch"
    assert model(torch.rand(1, 3, 5, 4)).shape == (1, 3, 15, 12)
    assert sys.path == path_before
    # Loading it again reuses the imported package.
    assert type(load_model(f"{package_model}:RCAN")) is type(model)


def test_a_relative_path_inside_a_package_works_from_its_folder(package_model, monkeypatch):
    monkeypatch.chdir(package_model.parents[2])
    model = load_model(f"{PACKAGE_NAME}/archs/rcan_arch.py:RCAN")
    assert model(torch.rand(1, 3, 4, 4)).shape == (1, 3, 8, 8)


def test_a_failing_relative_import_names_the_module_and_the_cause(package_model):
    broken = package_model.with_name("broken_arch.py")
    with pytest.raises(ImportError, match=rf"as module '{PACKAGE_NAME}\.archs\.broken_arch'.*no_such_sibling") as info:
        load_model(f"{broken}:Net")
    assert str(broken) in str(info.value)


def test_another_package_of_the_same_name_is_refused(package_model, tmp_path):
    load_model(f"{package_model}:RCAN")
    other = _write_package(tmp_path / "other_checkout")
    with pytest.raises(ImportError, match=f"another '{PACKAGE_NAME}' is already imported") as info:
        load_model(f"{other}:RCAN")
    assert str(package_model.parents[1]) in str(info.value)


def test_cli_runs_a_model_file_inside_a_package(package_model, tmp_path):
    from lam_captum.cli import main

    torch.manual_seed(0)
    torch.save(load_model(f"{package_model}:RCAN").state_dict(), tmp_path / "rcan.pth")
    lr = tmp_path / "lr.png"
    Image.fromarray((np.random.default_rng(0).random((12, 12, 3)) * 255).astype(np.uint8)).save(lr)
    code = main([str(lr), "--lr", "--model", f"{package_model}:RCAN", "--weights", str(tmp_path / "rcan.pth"),
                 "--size", "8", "--steps", "2", "--no-progress", "--output", str(tmp_path / "out")])
    assert code == 0
    assert np.load(tmp_path / "out" / "attribution.npy").shape == (3, 12, 12)


def test_sweep_runs_a_model_file_inside_a_package(package_model, tmp_path):
    from lam_captum.sweep import run_sweep

    study = {"models": [{"spec": f"{package_model}:RCAN", "scale": 2}],
             "images": [{"path": "builtin", "crop": [0, 0, 32, 32], "windows": [[8, 8, 8]]}], "lam": {"n_steps": 2}}
    report = run_sweep(study, output=tmp_path / "sweep", accelerator="cpu", devices=1, progress=False)
    assert [row["status"] for row in report.rows] == ["ok"], report.rows
