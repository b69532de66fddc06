"""Service configuration: defaults, MRDSERVE_* variables, flags; precedence args > env > defaults; clear errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from mrdserve.service.artifacts import BUNDLED_ARTIFACTS
from mrdserve.service.config import ServiceConfig, add_config_arguments


def _args(argv: list[str]) -> argparse.Namespace:
    return add_config_arguments(argparse.ArgumentParser()).parse_args(argv)


def test_defaults_match_the_contract():
    config = ServiceConfig.from_env_and_args(None, env={})
    assert (config.host, config.port, config.mrd_port) == ("0.0.0.0", 8000, 9002)
    assert config.artifacts == [BUNDLED_ARTIFACTS]
    assert (config.device, config.runner, config.max_batch, config.max_wait_ms) == ("auto", "auto", 4, 10.0)
    assert (config.queue_size, config.request_timeout_s, config.result_ttl_s) == (64, 120.0, 3600.0)
    assert config.api_keys == [] and config.cors_origins == [] and config.log_level == "INFO"


def test_args_override_env_which_overrides_defaults(tmp_path):
    env = {"MRDSERVE_PORT": "9000", "MRDSERVE_MAX_BATCH": "8", "MRDSERVE_API_KEYS": "a, b",
           "MRDSERVE_CORS_ORIGINS": "https://pacs.example", "MRDSERVE_LOG_LEVEL": "debug",
           "MRDSERVE_SPOOL_DIR": str(tmp_path), "MRDSERVE_WITH_BUNDLED": "no", "MRDSERVE_MAX_WAIT_MS": "2.5"}
    config = ServiceConfig.from_env_and_args(_args(["--port", "9100", "--api-keys", "c"]), env=env)
    assert config.port == 9100 and config.max_batch == 8 and config.max_wait_ms == 2.5
    assert config.api_keys == ["c"] and config.cors_origins == ["https://pacs.example"]
    assert config.log_level == "DEBUG" and config.spool_dir == tmp_path and config.mrd_port == 9002
    dict_args = ServiceConfig.from_env_and_args({"max_batch": 2, "port": None}, env=env)
    assert dict_args.max_batch == 2 and dict_args.port == 9000


def test_artifact_directories_replace_the_bundled_set_unless_kept(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    env = {"MRDSERVE_ARTIFACTS": f"{one}:{two}"}
    assert ServiceConfig.from_env_and_args(None, env=env).artifacts == [one, two]
    kept = ServiceConfig.from_env_and_args(_args(["--artifacts", str(one), "--with-bundled"]), env={})
    assert kept.artifacts == [BUNDLED_ARTIFACTS, one]
    assert ServiceConfig.from_env_and_args(_args([]), env={"MRDSERVE_WITH_BUNDLED": "1"}).artifacts == [
        BUNDLED_ARTIFACTS]


@pytest.mark.parametrize(("env", "message"), [
    ({"MRDSERVE_PORT": "abc"}, "MRDSERVE_PORT: expected an integer, got 'abc'"),
    ({"MRDSERVE_MAX_WAIT_MS": "soon"}, "MRDSERVE_MAX_WAIT_MS: expected a number"),
    ({"MRDSERVE_WITH_BUNDLED": "maybe"}, "MRDSERVE_WITH_BUNDLED: expected a boolean"),
    ({"MRDSERVE_PORT": "70000"}, "port must be a TCP port"),
    ({"MRDSERVE_MAX_BATCH": "0"}, "max_batch must be at least 1"),
    ({"MRDSERVE_DEVICE": "tpu"}, "device must be auto, cpu, cuda or cuda:N"),
    ({"MRDSERVE_RUNNER": "tensorrt"}, "runner must be one of auto, torchscript, onnx"),
    ({"MRDSERVE_LOG_LEVEL": "loud"}, "log_level must be one of"),
    ({"MRDSERVE_REQUEST_TIMEOUT_S": "-1"}, "request_timeout_s must be positive"),
])
def test_bad_values_name_the_variable_or_field(env, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        ServiceConfig.from_env_and_args(None, env=env)


def test_flag_errors_name_the_flag_and_providers_are_normalised():
    with pytest.raises(ValueError, match="--max-wait-ms: expected a number"):
        ServiceConfig.from_env_and_args({"max_wait_ms": "x"}, env={})
    config = ServiceConfig(onnx_providers=["tensorrt", "cuda", "CPUExecutionProvider"], artifacts=[Path(".")])
    assert config.onnx_providers == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert config.with_overrides(port=0).port == 0
