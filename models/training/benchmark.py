"""The seed thesis's benchmark of unrolled networks (Ramzi, ch. 4): one protocol, every network, one table.

``load_benchmark_config(path)`` reads a YAML file into a frozen ``BenchmarkConfig`` (``ValueError`` naming the
field). ``run_benchmark(config)`` makes the training and held-out data once with the trainer's ``build_datasets``
(synthetic held-out slices come from seeds disjoint from training), trains every method with the trainer's
``build_run`` / ``training_step`` under the same optimiser, loss, data order and step budget, scores PSNR and
SSIM (``models.data.metrics``) on the held-out slices, times inference per slice side by side (median of
interleaved repeats), and ``write_outputs`` writes the table (markdown), a figure (PNG) and the figures (JSON).

Every network sees the ``cartesian-sense`` inputs (kspace, mask, smaps) in the form its forward takes
(``NetworkInputs``): all three (XPDNet, Cascade-net, KIKI-net), the SENSE-combined adjoint S^H F^H M y (zero-filled,
U-Net), or, for the single-coil PD-net, the virtual single-coil k-space F S^H F^H M y and the mask (exactly the
measured k-space for single-coil data).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import re
import sys
import tempfile
import time
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from mrdserve.models.data import metrics
from mrdserve.models.data.prepare import output_to_image
from mrdserve.models.nets.complex import complex_to_real, real_to_complex
from mrdserve.models.physics.fft import fftnc
from mrdserve.models.physics.kernels import sense_reduce
from mrdserve.models.training.config import (
    DATA_KINDS,
    DEVICES,
    NetworkConfig,
    TrainConfig,
    config_from_dict,
    network_stages,
    read_yaml,
)
from mrdserve.models.training.datasets import collate_examples

HEADLINE = ("pdnet", "xpdnet", "cascade", "kiki", "unet", "zf")  # the last line's keys, in its order
CARTESIAN_TASKS = ("cartesian2d-multicoil", "cartesian2d-singlecoil")  # what cartesian-sense serves
FIT_EXAMPLES = 8  # training slices on which the loss is measured before and after training
METHOD_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
BUNDLED_CONFIG = Path(__file__).resolve().parent / "configs" / "benchmarks" / "unrolled.yaml"


# --- configuration -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MethodConfig:
    """One method of the table: a short name and a registry network with its keyword arguments."""

    name: str  # the table's and the last line's name (zf, unet, kiki, cascade, pdnet, xpdnet)
    network: str  # registry name (models.nets.registry)
    kwargs: dict[str, Any] = field(default_factory=dict)
    # KIKI-net as the thesis trained it: one block at a time (the trainer's loop.stagewise), the budget split evenly
    # (steps // n_stages steps per block; the remainder, fewer than n_stages steps, trains every block jointly)
    stagewise: bool = False


@dataclass(frozen=True)
class BenchmarkData:
    """The one data set: synthetic slices, or fastMRI / ISMRMRD files with a retrospective mask."""

    kind: str = "synthetic"  # synthetic | fastmri | ismrmrd
    path: str | None = None  # files: the training directory (``--data DIR`` sets it and the kind)
    val_path: str | None = None  # files: the held-out directory; None holds out the last val_fraction of path
    val_fraction: float = 0.1
    train_size: int = 256  # synthetic: training slices
    test_size: int = 16  # held-out slices scored (synthetic: generated; files: the first ones of the held-out set)
    generator: dict[str, Any] = field(default_factory=dict)  # synthetic: the trainer's data.generator
    mask: dict[str, Any] = field(default_factory=dict)  # files: mask_type, center_fractions, accelerations
    cache: bool | None = None  # keep prepared examples in memory; None: synthetic yes, files no


@dataclass(frozen=True)
class BenchmarkOptim:
    """The one optimiser of every network."""

    name: str = "adam"
    lr: float = 1e-3
    grad_clip: float | None = 1.0
    weight_decay: float = 0.0


@dataclass(frozen=True)
class BenchmarkTiming:
    """Inference timing: warm-up calls, then interleaved repeats (one call per method per round)."""

    repeats: int = 9
    warmup: int = 2


@dataclass(frozen=True)
class BenchmarkPreparation:
    """The preparation shared with the runtime (only ``cartesian-sense`` feeds all of these networks)."""

    name: str = "cartesian-sense"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BenchmarkConfig:
    """A whole benchmark: the methods and the one protocol they are all trained and scored under."""

    name: str
    task: str
    methods: tuple[MethodConfig, ...]
    seed: int = 0
    preparation: BenchmarkPreparation = field(default_factory=BenchmarkPreparation)
    data: BenchmarkData = field(default_factory=BenchmarkData)
    optim: BenchmarkOptim = field(default_factory=BenchmarkOptim)
    loss: str = "l1"
    steps: int = 2000  # the step budget of every trained network
    batch_size: int = 1
    device: str = "auto"
    num_workers: int = 0  # DataLoader worker processes (file data on a GPU: prepare slices in parallel)
    mixed_precision: str = "none"  # none | bf16: the trainer's loop.mixed_precision (every network alike)
    log_every: int = 100  # progress line on stderr every this many steps
    timing: BenchmarkTiming = field(default_factory=BenchmarkTiming)
    figure_slice: int = 0  # which held-out slice the PNG shows
    output_dir: str = "bench/out/unrolled"


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _convert(value: Any, annotation: Any, where: str) -> Any:
    """``value`` checked against ``annotation`` (ints accepted for floats); ``where`` names the field."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            if type(None) in typing.get_args(annotation):
                return None
            raise ValueError(f"{where}: must not be null")
        return _convert(value, options[0], where)
    if dataclasses.is_dataclass(annotation):
        return _build(typing.cast(type, annotation), value, where)
    if origin is tuple:
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {_describe(value)}")
        item = typing.get_args(annotation)[0]
        return tuple(_convert(entry, item, f"{where}[{index}]") for index, entry in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
            raise ValueError(f"{where}: expected a mapping with string keys, got {_describe(value)}")
        return dict(value)
    if annotation is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, str, bool) and isinstance(value, annotation) and not (
            annotation is int and isinstance(value, bool)):
        return value
    raise ValueError(f"{where}: expected {getattr(annotation, '__name__', annotation)}, got {_describe(value)}")


def _build(cls: type, data: Any, where: str) -> Any:
    """Dataclass ``cls`` from the mapping ``data``: unknown keys, missing fields and wrong types name the field."""
    prefix = f"{where}." if where else ""
    if not isinstance(data, dict):
        raise ValueError(f"{where or 'config'}: expected a mapping, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise ValueError(f"{prefix}{key}: unknown key; expected one of {', '.join(fields)}")
    values = {}
    for name, spec in fields.items():
        if name in data:
            values[name] = _convert(data[name], hints[name], f"{prefix}{name}")
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise ValueError(f"{prefix}{name}: required field is missing")
    return cls(**values)


def _check(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise ValueError(f"{where}: {message}")


def validate_benchmark(config: BenchmarkConfig) -> BenchmarkConfig:
    """Check what types cannot: names, ranges, networks and their kwargs, and the trainer's own checks of the
    shared sections (their messages name this file's fields)."""
    from mrdserve.models.nets.registry import NETWORKS, build_network

    _check(bool(config.name), "name", "must not be empty")
    _check(config.task in CARTESIAN_TASKS, "task",
           f"the benchmark runs {', '.join(CARTESIAN_TASKS)}, got {config.task!r}")
    _check(config.preparation.name == "cartesian-sense", "preparation.name",
           f"the benchmark's networks take cartesian-sense inputs, got {config.preparation.name!r}")
    _check(config.data.kind in DATA_KINDS, "data.kind", f"expected one of {', '.join(DATA_KINDS)}, "
           f"got {config.data.kind!r}")
    _check(config.device in DEVICES, "device", f"expected one of {', '.join(DEVICES)}, got {config.device!r}")
    for name in ("steps", "batch_size", "log_every"):
        _check(getattr(config, name) > 0, name, f"must be > 0, got {getattr(config, name)!r}")
    _check(config.data.test_size > 0, "data.test_size", f"must be > 0, got {config.data.test_size!r}")
    _check(config.timing.repeats > 0, "timing.repeats", f"must be > 0, got {config.timing.repeats!r}")
    _check(config.timing.warmup >= 0, "timing.warmup", f"must be >= 0, got {config.timing.warmup!r}")
    _check(0 <= config.figure_slice < config.data.test_size, "figure_slice",
           f"must lie in [0, data.test_size = {config.data.test_size}), got {config.figure_slice!r}")
    _check(bool(config.methods), "methods", "list at least one method")
    seen: set[str] = set()
    for index, method in enumerate(config.methods):
        where = f"methods[{index}]"
        _check(bool(METHOD_NAME.match(method.name)), f"{where}.name",
               f"use lower-case letters, digits and _ (it becomes the key {method.name}_db), got {method.name!r}")
        _check(method.name not in seen, f"{where}.name", f"{method.name!r} is listed twice")
        seen.add(method.name)
        _check(method.network in NETWORKS, f"{where}.network",
               f"unknown network {method.network!r}; known networks: {', '.join(sorted(NETWORKS))}")
        try:
            network = build_network(method.network, **method.kwargs)
            NetworkInputs(network)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{where}.kwargs: {exc}") from exc
        _check(not method.stagewise or callable(getattr(network, "set_training_stage", None)),
               f"{where}.stagewise", f"network {method.network!r} has no stage-wise training")
    for method in config.methods:
        train_config(config, method, Path(tempfile.gettempdir()))  # the trainer's checks of the shared sections
    return config


def benchmark_config_from_dict(data: Any) -> BenchmarkConfig:
    """Build and validate a ``BenchmarkConfig`` from a plain mapping (as parsed from YAML)."""
    return validate_benchmark(_build(BenchmarkConfig, data, ""))


def load_benchmark_config(path: str | Path) -> BenchmarkConfig:
    """Read a YAML benchmark config (``ValueError`` naming the field on error)."""
    return benchmark_config_from_dict(read_yaml(path))


def with_overrides(config: BenchmarkConfig, steps: int | None = None, data_path: str | None = None,
                   data_kind: str | None = None, output_dir: str | None = None) -> BenchmarkConfig:
    """``config`` with the command line's changes (step budget, data directory and kind, output), validated."""
    data = config.data
    if data_path is not None:
        data = dataclasses.replace(data, path=data_path, kind=data_kind or data.kind)
    changed = dataclasses.replace(config, data=data, steps=config.steps if steps is None else steps,
                                  output_dir=config.output_dir if output_dir is None else output_dir)
    return validate_benchmark(changed)


# --- the trainer's view of one method ------------------------------------------------------------------------

_TRAINER_FIELDS = {"network.name": "methods[{i}].network", "network.kwargs": "methods[{i}].kwargs",
                   "loop.steps": "steps", "loop.batch_size": "batch_size", "loop.device": "device",
                   "loop.log_every": "log_every", "loop.num_workers": "num_workers",
                   "loop.mixed_precision": "mixed_precision", "data.val_size": "data.test_size",
                   "loop.stagewise": "methods[{i}].stagewise"}


def _benchmark_field(message: str, index: int, file_data: bool) -> str:
    """A trainer error message with its field renamed to this config's (``data.generator`` is ``data.mask``
    for file data)."""
    renames = dict(_TRAINER_FIELDS)
    if file_data:
        renames["data.generator"] = "data.mask"
    for trainer, ours in renames.items():
        if message.startswith(trainer):
            return ours.format(i=index) + message[len(trainer):]
    return message


def train_config(config: BenchmarkConfig, method: MethodConfig, output_dir: Path,
                 steps: int | None = None) -> TrainConfig:
    """The trainer's config of ``method`` under the benchmark's protocol (no periodic validation; checkpoints
    only at the end, in ``output_dir``; a stage-wise method's budget split evenly over its stages)."""
    data = config.data
    file_data = data.kind != "synthetic"
    budget = config.steps if steps is None else steps
    index = config.methods.index(method) if method in config.methods else 0
    stagewise = None
    if method.stagewise:
        try:
            stagewise = {"steps_per_stage": budget // network_stages(NetworkConfig(method.network, method.kwargs))}
        except ValueError as exc:
            raise ValueError(_benchmark_field(str(exc), index, file_data)) from exc
    trainer = {
        "name": f"{config.name}-{method.name}", "task": config.task, "seed": config.seed,
        "network": {"name": method.network, "kwargs": dict(method.kwargs)},
        "preparation": {"name": config.preparation.name, "params": dict(config.preparation.params)},
        "data": {"kind": data.kind, "path": data.path, "val_path": data.val_path, "val_fraction": data.val_fraction,
                 "train_size": data.train_size, "val_size": data.test_size,
                 "generator": dict(data.mask if file_data else data.generator), "cache": False},
        "optim": {"name": config.optim.name, "lr": config.optim.lr, "grad_clip": config.optim.grad_clip,
                  "weight_decay": config.optim.weight_decay, "scheduler": "none"},
        "loop": {"steps": budget, "batch_size": config.batch_size, "val_every": 0, "val_examples": 0,
                 "checkpoint_every": budget, "log_every": config.log_every, "device": config.device,
                 "num_workers": config.num_workers, "mixed_precision": config.mixed_precision,
                 "stagewise": stagewise},
        "loss": config.loss, "output_dir": str(output_dir),
    }
    try:
        return config_from_dict(trainer)
    except ValueError as exc:
        raise ValueError(_benchmark_field(str(exc), index, file_data)) from exc


# --- inputs ---------------------------------------------------------------------------------------------------


class NetworkInputs(nn.Module):
    """``network`` fed one cartesian-sense batch (kspace, mask, smaps) in the form its forward takes."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        arguments = set(inspect.signature(network.forward).parameters)
        if "adjoint_image" in arguments:
            self.form = "adjoint"
        elif {"kspace", "mask", "smaps"} <= arguments:
            self.form = "sense"
        elif {"kspace", "mask"} <= arguments:
            self.form = "single-coil"
        else:
            raise ValueError(f"{type(network).__name__} takes ({', '.join(sorted(arguments))}); the benchmark "
                             "feeds (kspace, mask, smaps), the adjoint image or a single-coil (kspace, mask)")
        self.network = network

    def set_training_stage(self, stage: int | None) -> list[nn.Parameter]:
        """The wrapped network's stage-wise training (KIKI-net; the trainer's ``loop.stagewise`` calls it)."""
        return self.network.set_training_stage(stage)

    def forward(self, kspace: torch.Tensor, mask: torch.Tensor, smaps: torch.Tensor) -> torch.Tensor:
        if self.form == "sense":
            return self.network(kspace, mask, smaps)
        image = sense_reduce(real_to_complex(kspace), real_to_complex(smaps), mask)  # [B, 1, y, x]
        if self.form == "adjoint":
            return self.network(complex_to_real(image[:, 0]))
        return self.network(complex_to_real(fftnc(image, 2)), mask)


def parameter_count(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


# --- training ---------------------------------------------------------------------------------------------------


@dataclass
class MethodResult:
    """What one method did: training, held-out scores, timing."""

    name: str
    network: str
    kwargs: dict[str, Any]
    parameters: int
    steps: int = 0
    train_seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    fit_before: float = math.nan  # mean loss on the first training slices before training
    fit_after: float = math.nan  # ... and after: a trained network fits its own training data better
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    inference_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Means, standard deviations (over held-out slices) and the median inference time."""
        tenth = max(1, len(self.losses) // 10)
        return {
            "name": self.name, "network": self.network, "kwargs": self.kwargs, "parameters": self.parameters,
            "steps": self.steps, "train_seconds": round(self.train_seconds, 2),
            "psnr_mean": _mean(self.psnr), "psnr_std": _std(self.psnr),
            "ssim_mean": _mean(self.ssim), "ssim_std": _std(self.ssim),
            "inference_ms_median": float(np.median(self.inference_ms)) if self.inference_ms else math.nan,
            "loss_first": _mean(self.losses[:tenth]) if self.losses else math.nan,
            "loss_last": _mean(self.losses[-tenth:]) if self.losses else math.nan,
            "fit_before": self.fit_before, "fit_after": self.fit_after,
        }


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def _std(values: Sequence[float]) -> float:
    return float(np.std(values)) if len(values) else math.nan


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@torch.no_grad()
def fitting_loss(run: Any, model: nn.Module, dataset: Dataset, n_examples: int = FIT_EXAMPLES) -> float:
    """Mean training loss of ``model`` (eval mode) on the first ``n_examples`` slices of ``dataset``."""
    from mrdserve.models.training.loop import training_loss

    was_training = model.training
    model.eval()
    losses = []
    for index in range(min(n_examples, _size(dataset))):
        batch = collate_examples([dataset[index]]).to(run.device)
        losses.append(float(training_loss(run.loss_fn, batch, model(**batch.inputs))))
    model.train(was_training)
    return _mean(losses)


def train_method(config: BenchmarkConfig, method: MethodConfig, train_set: Dataset, workdir: Path,
                 say: Callable[[str], None] = _say) -> tuple[NetworkInputs, MethodResult]:
    """Train ``method`` on ``train_set`` with the trainer's run pieces; networks without parameters are not
    trained. Every network starts from the benchmark's seed and sees the same batches in the same order."""
    from mrdserve.models.training import loop

    trainer = train_config(config, method, workdir / method.name)
    device = loop.resolve_device(config.device)
    loop.seed_everything(config.seed)
    model = NetworkInputs(loop.build_model(trainer, device))  # with the trainer's mixed precision, if asked
    result = MethodResult(method.name, method.network, dict(method.kwargs), parameter_count(model))
    if not any(p.requires_grad for p in model.parameters()):
        return model, result
    run = loop.build_run(trainer, resume=False)  # devices, determinism, loss, scaler: as `mrdserve train` has them
    if run.writer is not None:
        run.writer.close()
    run = dataclasses.replace(run, model=model, network=loop.wrap_network(model, run.dist, run.device), writer=None,
                              loader=loop.step_loader(trainer, train_set, run.dist, run.device, 0))
    result.fit_before = fitting_loss(run, model, train_set)
    if run.stages is not None:
        loop.enter_stage(run, run.stages.stage_at(0))  # the first stage's optimiser, over this model's parameters
    else:
        run.optimizer = loop.build_optimizer(trainer, model.parameters())
        run.scheduler = loop.build_scheduler(trainer, run.optimizer)
    model.train()
    started = time.perf_counter()
    for batch in run.loader:
        loop.advance_stage(run, len(result.losses))
        result.losses.append(loop.training_step(run, batch))
        step = len(result.losses)
        if step % config.log_every == 0 or step == config.steps:
            recent = result.losses[-config.log_every:]
            stage = "" if run.stages is None else f" ({'joint' if run.stage is None else f'stage {run.stage}'})"
            say(f"  {method.name}: step {step}/{config.steps}{stage} loss {_mean(recent):.5f} "
                f"({(time.perf_counter() - started) / step:.3f} s/step)")
    loop.end_stages(run)
    result.steps, result.train_seconds = len(result.losses), time.perf_counter() - started
    result.fit_after = fitting_loss(run, model, train_set)
    model.eval()
    return model, result


# --- scoring and timing -----------------------------------------------------------------------------------------


@torch.no_grad()
def score(model: nn.Module, dataset: Dataset, indices: Sequence[int], device: torch.device
          ) -> tuple[list[float], list[float], list[np.ndarray], list[np.ndarray]]:
    """Per-slice PSNR and SSIM (fastMRI conventions, data units, recon grid), reconstructions and truths."""
    model.eval()
    psnrs, ssims, images, truths = [], [], [], []
    for index in indices:
        batch = collate_examples([dataset[int(index)]]).to(device)
        output = model(**batch.inputs).float()
        image = output_to_image(output, batch.scale, batch.recon_matrix)[0].cpu().numpy()
        truth = (batch.target[0] * batch.scale[0]).cpu().numpy()
        psnrs.append(metrics.psnr(truth, image))
        ssims.append(metrics.ssim(truth, image))
        images.append(image)
        truths.append(truth)
    return psnrs, ssims, images, truths


@torch.no_grad()
def time_inference(models: dict[str, nn.Module], inputs: dict[str, torch.Tensor], device: torch.device,
                   repeats: int, warmup: int) -> dict[str, list[float]]:
    """Milliseconds per call of each model on ``inputs`` (one slice): ``warmup`` calls each, then ``repeats``
    rounds calling every model once, so that all methods share the machine's state of each moment."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for model in models.values():
        model.eval()
        for _ in range(warmup):
            model(**inputs)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            sync()
            started = time.perf_counter()
            model(**inputs)
            sync()
            times[name].append(1e3 * (time.perf_counter() - started))
    return times


# --- the run ------------------------------------------------------------------------------------------------------


@dataclass
class BenchmarkResult:
    """Every method's result, the held-out images of the figure slice, and what the data were."""

    config: BenchmarkConfig
    methods: list[MethodResult]
    data_info: dict[str, str]
    n_train: int
    n_test: int
    data_seconds: float
    figure_slice: int  # which held-out slice ``truth`` and ``images`` are
    truth: np.ndarray  # figure slice ground truth
    images: dict[str, np.ndarray]  # figure slice per method
    device: str

    def best(self) -> str:
        """The method with the highest mean held-out PSNR."""
        return max(self.methods, key=lambda m: _mean(m.psnr) if m.psnr else -math.inf).name


def _size(dataset: Dataset) -> int:
    return len(dataset)  # type: ignore[arg-type]


def _warm(dataset: Dataset, indices: Sequence[int]) -> None:
    for index in sorted(set(int(i) for i in indices)):
        dataset[index]


def run_benchmark(config: BenchmarkConfig, say: Callable[[str], None] = _say) -> BenchmarkResult:
    """Make the data once, train every method under the one protocol, score and time them side by side."""
    from mrdserve.models.training import loop

    device = loop.resolve_device(config.device)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mrdserve-benchmark-") as tmp:
        workdir = Path(tmp)
        base = train_config(config, config.methods[0], workdir / "data")
        train_set, held_out, data_info = loop.build_datasets(base)
        n_test = min(config.data.test_size, _size(held_out))
        if n_test == 0:
            raise ValueError("data: the held-out set is empty (files: give data.val_path or more files in data.path)")
        test_indices = list(range(n_test))
        cache = config.data.kind == "synthetic" if config.data.cache is None else config.data.cache
        if cache:
            train_set, held_out = loop.CachedDataset(train_set), loop.CachedDataset(held_out)
            sampler = loop.StepSampler(_size(train_set), config.batch_size, config.seed, 0, config.steps)
            say(f"preparing {len(set(sampler))} training and {n_test} held-out slices ({data_info['description']})")
            _warm(train_set, list(sampler))
            _warm(held_out, test_indices)
        data_seconds = time.perf_counter() - started
        models: dict[str, nn.Module] = {}
        results: list[MethodResult] = []
        for method in config.methods:
            say(f"training {method.name} ({method.network}, {config.steps} steps)")
            models[method.name], result = train_method(config, method, train_set, workdir, say)
            results.append(result)
    figure = min(config.figure_slice, n_test - 1)
    images: dict[str, np.ndarray] = {}
    truth = np.zeros(0)
    for method, result in zip(config.methods, results, strict=True):
        result.psnr, result.ssim, recons, truths = score(models[method.name], held_out, test_indices, device)
        images[method.name], truth = recons[figure], truths[figure]
        say(f"{method.name}: PSNR {_mean(result.psnr):.2f} dB, SSIM {_mean(result.ssim):.4f} on {n_test} held-out "
            "slices")
    inputs = collate_examples([held_out[figure]]).to(device).inputs
    timings = time_inference(models, inputs, device, config.timing.repeats, config.timing.warmup)
    for result in results:
        result.inference_ms = timings[result.name]
    return BenchmarkResult(config=config, methods=results, data_info=data_info, n_train=_size(train_set),
                           n_test=n_test, data_seconds=data_seconds, figure_slice=figure, truth=truth,
                           images=images, device=str(device))


# --- outputs ------------------------------------------------------------------------------------------------------


def headline(result: BenchmarkResult) -> str:
    """The last line: ``best=<name> pdnet_db=<x> ... zf_db=<x>`` (nan for a method not run), extra methods after."""
    psnr = {m.name: _mean(m.psnr) for m in result.methods}
    names = list(HEADLINE) + [m.name for m in result.methods if m.name not in HEADLINE]
    return " ".join([f"best={result.best()}"] + [f"{name}_db={psnr.get(name, math.nan):.2f}" for name in names])


def markdown_table(result: BenchmarkResult) -> str:
    """The table: one row per method (held-out PSNR/SSIM mean ± std, parameters, inference and training time)."""
    lines = ["| method | network | parameters | PSNR (dB) | SSIM | inference (ms/slice, median) | training (s) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for method in result.methods:
        s = method.summary()
        lines.append(f"| {s['name']} | {s['network']} | {s['parameters']:,} | {s['psnr_mean']:.2f} ± "
                     f"{s['psnr_std']:.2f} | {s['ssim_mean']:.4f} ± {s['ssim_std']:.4f} | "
                     f"{s['inference_ms_median']:.1f} | {s['train_seconds']:.0f} |")
    return "\n".join(lines)


def thesis_check(result: BenchmarkResult) -> dict[str, Any]:
    """The thesis's finding, checked: PD-net best, and with the fewest parameters among the trained networks."""
    by_psnr = sorted(result.methods, key=lambda m: -_mean(m.psnr))
    trained = [m for m in result.methods if m.parameters > 0]
    pdnet = next((m for m in result.methods if m.network == "pdnet"), None)
    return {"ordering_by_psnr": [m.name for m in by_psnr],
            "pdnet_best": pdnet is not None and result.best() == pdnet.name,
            "pdnet_fewest_parameters": pdnet is not None and all(pdnet.parameters <= m.parameters for m in trained)}


def _tile(image: np.ndarray, top: float, zoom: int) -> np.ndarray:
    tile = (np.clip(np.nan_to_num(image / top, nan=0.0), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.kron(tile, np.ones((zoom, zoom), dtype=np.uint8)) if zoom > 1 else tile


def write_figure(result: BenchmarkResult, path: Path) -> Path:
    """PNG of the figure slice: top row ground truth and every method on one grey scale (the truth's 99.5th
    percentile), bottom row |error| on one scale for all methods (the largest 99.5th percentile of their errors,
    shown as a gain over the image scale); each column labelled with its name and that slice's PSNR."""
    from PIL import Image, ImageDraw

    truth = result.truth
    top = float(np.percentile(truth, 99.5)) or 1.0
    errors = [np.abs(result.images[m.name] - truth) for m in result.methods]
    error_top = max([float(np.percentile(e, 99.5)) for e in errors] + [1e-12 * top])
    error_gain = top / error_top
    zoom = max(1, 192 // max(truth.shape))
    label, gap = 14, 2
    height, width = truth.shape[0] * zoom, truth.shape[1] * zoom
    columns = [("truth", truth, None)] + [(m.name, result.images[m.name], m) for m in result.methods]
    canvas = Image.new("L", ((width + gap) * len(columns), 2 * (height + label)), 0)
    draw = ImageDraw.Draw(canvas)
    for column, (name, image, method) in enumerate(columns):
        x = column * (width + gap)
        canvas.paste(Image.fromarray(_tile(image, top, zoom)), (x, label))
        error = np.zeros_like(truth) if method is None else error_gain * np.abs(image - truth)
        canvas.paste(Image.fromarray(_tile(error, top, zoom)), (x, 2 * label + height))
        psnr = "" if method is None else f" {method.psnr[result.figure_slice]:.1f} dB"
        draw.text((x + 2, 1), f"{name}{psnr}", fill=255)
        draw.text((x + 2, label + height + 1), "" if method is None else f"|error| x{error_gain:.1f}", fill=255)
    canvas.save(path)
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def write_outputs(result: BenchmarkResult, output_dir: str | Path) -> dict[str, Path]:
    """``table.md``, ``figure.png`` and ``results.json`` (every figure, per-slice scores, losses, timings)."""
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    config = result.config
    table = output / "table.md"
    table.write_text(f"# {config.name}: {config.task}, {result.n_train} training / {result.n_test} held-out slices, "
                     f"{config.steps} steps\n\n{markdown_table(result)}\n\n{headline(result)}\n")
    figure = write_figure(result, output / "figure.png")
    payload = {
        "config": dataclasses.asdict(config),
        "data": {**result.data_info, "n_train": result.n_train, "n_test": result.n_test,
                 "prepare_seconds": round(result.data_seconds, 2)},
        "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": result.device},
        "methods": [{**m.summary(), "psnr": m.psnr, "ssim": m.ssim, "inference_ms": m.inference_ms,
                     "losses": m.losses} for m in result.methods],
        "best": result.best(),
        "thesis": thesis_check(result),
        "headline": headline(result),
        "notes": {"std": "population standard deviation over held-out slices",
                  "inference": "one held-out slice, batch 1, no gradients, interleaved repeats; median",
                  "pdnet_input": "multicoil data reach the single-coil PD-net as the virtual coil F S^H F^H M y"},
    }
    results = output / "results.json"
    results.write_text(json.dumps(_jsonable(payload), indent=1) + "\n")
    return {"table": table, "figure": figure, "results": results}
