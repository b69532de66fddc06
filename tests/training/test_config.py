"""Training configs: every bundled YAML loads; user errors name the dotted field."""

from __future__ import annotations

from pathlib import Path

import pytest

from mrdserve.models.training.config import TrainConfig, config_from_dict, config_to_dict, load_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "models" / "training" / "configs"
BASE = {"name": "t", "task": "cartesian2d-multicoil"}


def _with(**sections):
    data = {key: (dict(value) if isinstance(value, dict) else value) for key, value in BASE.items()}
    data.update(sections)
    return data


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_bundled_config_loads(path):
    config = load_config(path)
    assert isinstance(config, TrainConfig)
    assert config_from_dict(config_to_dict(config)) == config


def test_bundled_configs_cover_the_issue():
    names = {p.stem for p in CONFIG_DIR.glob("*.yaml")}
    assert {"xpdnet_fastmri_brain_4x", "xpdnet_fastmri_knee_8x", "ncpdnet_radial_2d", "ncpdnet_spiral_2d",
            "ncpdnet_radial_2d_singlecoil", "ncpdnet_3d", "unet_baseline", "demo_xpdnet", "demo_xpdnet_dc",
            "demo_ncpdnet_radial", "demo_ncpdnet_spiral"} <= names
    thesis = load_config(CONFIG_DIR / "xpdnet_fastmri_brain_4x.yaml")
    assert (thesis.loss, thesis.optim.name, thesis.optim.lr, thesis.loop.batch_size) == ("compound", "radam", 1e-4, 1)
    assert thesis.optim.grad_clip is not None and thesis.network.kwargs["preset"] == "medium"


def test_defaults_and_int_accepted_for_float():
    config = config_from_dict(_with(optim={"lr": 1}))
    assert config.optim.lr == 1.0 and isinstance(config.optim.lr, float)
    assert config.loop.device == "auto" and config.network.name == "xpdnet"


def test_stagewise_is_off_by_default_and_round_trips():
    assert config_from_dict(_with()).loop.stagewise is None
    config = config_from_dict(_with(network={"name": "kikinet", "kwargs": {"n_iter": 3}},
                                    loop={"steps": 7, "stagewise": {"steps_per_stage": 1}}))
    assert config.loop.stagewise.steps_per_stage == 1  # 6 stages (K-I-K-I-K-I), then 1 joint step
    assert config_from_dict(config_to_dict(config)) == config


@pytest.mark.parametrize(("data", "message"), [
    (_with(optim={"lr": "fast"}), "optim.lr: expected float, got str 'fast'"),
    (_with(loop={"stepz": 3}), "loop.stepz: unknown key"),
    (_with(extra=1), "extra: unknown key"),
    (_with(loop={"steps": 2.5}), "loop.steps: expected int, got float 2.5"),
    (_with(loop={"amp": "yes"}), "loop.amp: expected bool"),
    (_with(network={"name": "resnet"}), "network.name: unknown value 'resnet'"),
    (_with(network={"kwargs": [1]}), "network.kwargs: expected a mapping"),
    (_with(task="cartesian3d"), "task: unknown value 'cartesian3d'"),
    (_with(loss="huber"), "loss: unknown value 'huber'"),
    (_with(data={"kind": "fastmri"}), "data.path: required for data.kind 'fastmri'"),
    (_with(data={"kind": "ismrmrd"}), "data.path: required for data.kind 'ismrmrd'"),
    (_with(data={"generator": {"colis": 4}}), "data.generator.colis: unknown key"),
    (_with(preparation={"name": "noncartesian-toeplitz"}), "preparation.name: 'noncartesian-toeplitz' serves"),
    (_with(preparation={"params": {"sensitivities": "magic"}}), "preparation.params:"),
    (_with(optim={"scheduler": "linear"}), "optim.scheduler: unknown value 'linear'"),
    (_with(optim={"lr": -1.0}), "optim.lr: must be > 0"),
    ({"task": "cartesian2d-multicoil"}, "name: required field is missing"),
    (_with(loop={"stagewise": {"steps_per_stage": 2}}), "loop.stagewise: network 'xpdnet' has no training stages"),
    (_with(network={"name": "kikinet"}, loop={"stagewise": 5}), "loop.stagewise: expected a mapping, got int 5"),
    (_with(network={"name": "kikinet"}, loop={"stagewise": {"steps": 2}}), "loop.stagewise.steps: unknown key"),
    (_with(network={"name": "kikinet"}, loop={"stagewise": {"steps_per_stage": 0}}),
     "loop.stagewise.steps_per_stage: must be > 0"),
    (_with(network={"name": "kikinet"}, loop={"steps": 10, "stagewise": {"steps_per_stage": 3}}),
     "loop.stagewise.steps_per_stage: 4 stages of 3 steps need 12 steps, but loop.steps is 10"),
    (_with(network={"name": "kikinet", "kwargs": {"n_iter": 0}}, loop={"stagewise": {"steps_per_stage": 1}}),
     "network.kwargs: "),
    ([1, 2], "config: expected a mapping"),
])
def test_errors_name_the_field(data, message):
    with pytest.raises(ValueError) as info:
        config_from_dict(data)
    assert message in str(info.value)


def test_load_config_reports_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("name: x\ntask: cartesian2d-multicoil\noptim:\n  lr: fast\n")
    with pytest.raises(ValueError, match=r"optim\.lr: expected float, got str 'fast'"):
        load_config(typo)
