"""Training configuration: a YAML file mapped onto typed, documented dataclasses and validated on load.

``load_config(path)`` (or ``config_from_dict``) rejects unknown keys, wrong types, missing data paths and unknown
network/preparation/task/loss names with a ``ValueError`` naming the dotted field, e.g.
``optim.lr: expected float, got str 'fast'``. ``config_to_dict`` gives the plain dict stored in checkpoints.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mrdserve.models.data.manifest_schema import PREPARATIONS, TASKS

DATA_KINDS = ("synthetic", "fastmri", "ismrmrd")
OPTIMIZERS = ("radam", "adam", "adamw")
SCHEDULERS = ("none", "step", "cosine")
DEVICES = ("auto", "cpu", "cuda")
MIXED_PRECISIONS = ("none", "bf16")
# data.generator keys: SyntheticDataset's simulation parameters, or the retrospective mask of file datasets.
SYNTHETIC_GENERATOR_KEYS = ("matrix", "coils", "acceleration", "trajectory", "mask_type", "center_fraction",
                            "noise_level", "ismrmrd_path", "content")
FILE_GENERATOR_KEYS = ("mask_type", "center_fractions", "accelerations")


@dataclass
class NetworkConfig:
    """Which network to train: a name from ``models.nets.registry`` and its constructor keyword arguments."""

    name: str = "xpdnet"  # registry name: xpdnet, ncpdnet, pdnet, unet, zero-filled
    kwargs: dict[str, Any] = field(default_factory=dict)  # passed to build_network(name, **kwargs)


@dataclass
class PreparationConfig:
    """The preparation (shared with the runtime) that turns a k-space sample into network inputs."""

    name: str = "cartesian-sense"  # cartesian-sense | noncartesian-toeplitz (models.data.prepare)
    params: dict[str, Any] = field(default_factory=dict)  # e.g. {sensitivities: espirit} or {density: pipe-menon}


@dataclass
class DataConfig:
    """Where training and validation examples come from."""

    kind: str = "synthetic"  # synthetic | fastmri | ismrmrd
    path: str | None = None  # training directory (fastmri/ismrmrd); required for those kinds
    val_path: str | None = None  # validation directory; None splits ``path`` by val_fraction
    val_fraction: float = 0.1  # fraction of the files in ``path`` held out for validation when val_path is None
    train_size: int = 64  # synthetic: number of training slices (each drawn from its own seed)
    val_size: int = 4  # synthetic: number of held-out validation slices (seeds disjoint from training)
    # synthetic: SYNTHETIC_GENERATOR_KEYS (matrix, coils, acceleration, trajectory, mask_type, center_fraction,
    # noise_level); fastmri/ismrmrd: FILE_GENERATOR_KEYS, the retrospective mask (mask_type equispaced_fraction,
    # center_fractions [0.08], accelerations [4]) applied to fully sampled Cartesian data
    generator: dict[str, Any] = field(default_factory=dict)
    cache: bool = True  # keep prepared examples in memory (examples are deterministic per index: only saves time)


@dataclass
class OptimConfig:
    """Optimiser, gradient clipping and learning-rate schedule."""

    name: str = "radam"  # radam | adam | adamw
    lr: float = 1e-4  # learning rate
    weight_decay: float = 0.0  # L2 (adam, radam) or decoupled (adamw) weight decay
    grad_clip: float | None = 1.0  # max global gradient norm; None disables clipping
    scheduler: str = "none"  # none | step | cosine
    scheduler_params: dict[str, Any] = field(default_factory=dict)  # step: step_size, gamma; cosine: eta_min


@dataclass
class StagewiseConfig:
    """Stage-wise training of a network with stages (``set_training_stage``: KIKI-net, one stage per block).

    Stage s (0-based) runs steps ``[s * steps_per_stage, (s + 1) * steps_per_stage)``: the network's forward stops
    after block s, every other block is frozen, and a fresh optimiser (and schedule, over the stage's steps) covers
    that block's parameters alone. The ``loop.steps - n_stages * steps_per_stage`` steps after the last stage train
    every parameter jointly, with one more fresh optimiser; ``n_stages * steps_per_stage == loop.steps`` is the
    thesis's schedule (Ramzi, ch. 4: KIKI-net's K, I, K, I blocks trained one after the other, each with the earlier
    ones frozen, no joint phase). A run resumed mid-stage continues in that stage; validation during a stage scores
    the network up to that stage's block. The stage-wise benchmark (``models.training.benchmark``) uses the same.
    """

    steps_per_stage: int  # steps of each block's stage


@dataclass
class LoopConfig:
    """How long and how the loop runs.

    ``mixed_precision: bf16`` trains with bfloat16 autocast on CPU or CUDA: the network's convolution blocks
    (its sub-modules made only of torch.nn layers) run under ``torch.autocast(dtype=torch.bfloat16)`` and hand
    float32 back, so the physics between them (FFTs, SENSE / Toeplitz operators, data consistency, complex
    arithmetic) and the loss stay float32; no gradient scaler is needed, validation and export run float32.
    ``amp`` is the older CUDA-only float16 switch (with a GradScaler); the two cannot be combined.
    """

    steps: int = 1000  # optimisation steps (batches) in total; 0 with init_from: save that network as this config's
    batch_size: int = 1  # examples per step and process
    val_every: int = 500  # validate every this many steps (and at the end); 0 disables periodic validation
    val_examples: int = 4  # validation examples used (at most the validation set's size)
    checkpoint_every: int = 500  # write a checkpoint every this many steps (and at the end)
    log_every: int = 10  # TensorBoard / progress-bar update period in steps
    amp: bool = False  # float16 mixed precision (torch.autocast + GradScaler); CUDA only, ignored on CPU
    mixed_precision: str = "none"  # none | bf16 (bfloat16 autocast of the conv blocks, CPU or CUDA; see above)
    grad_checkpointing: bool = False  # recompute each unrolled iteration's image net in backward (saves memory)
    device: str = "auto"  # auto | cpu | cuda
    num_workers: int = 0  # DataLoader worker processes
    deterministic: bool = True  # torch.use_deterministic_algorithms(warn_only) and cudnn deterministic
    # fine-tune: start from these weights (a checkpoint .pt or an artifact directory's model.ts); parameters of
    # the same name and shape are copied, the rest keep their fresh initialisation
    init_from: str | None = None
    # stage-wise training (KIKI-net): {steps_per_stage: N} trains the network's blocks one at a time, N steps
    # each, then all of them jointly for the steps left (see StagewiseConfig); null (default) trains jointly
    stagewise: StagewiseConfig | None = None


@dataclass
class TrainConfig:
    """A complete training run."""

    name: str  # run name; also the default artifact name
    task: str  # one of TASKS
    network: NetworkConfig = field(default_factory=NetworkConfig)
    preparation: PreparationConfig = field(default_factory=PreparationConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    seed: int = 0  # seeds python, numpy and torch RNGs (and the synthetic data)
    loss: str = "compound"  # compound (0.98 (1 - MS-SSIM) + 0.02 L1) | ms-ssim | ssim | l1 | mse
    output_dir: str = "runs/default"  # checkpoints (latest.pt, step_*.pt) and TensorBoard logs


def _type_name(value: Any) -> str:
    return type(value).__name__


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{_type_name(value)} {text if len(text) <= 60 else text[:57] + '...'}"


def _convert(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against the resolved type ``annotation`` (ints are accepted for floats)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, where)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(errors[0] if len(errors) == 1 else
                         f"{where}: expected {_annotation_name(annotation)}, got {_describe(value)}")
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {_describe(value)}")
        bad = [key for key in value if not isinstance(key, str)]
        if bad:
            raise ValueError(f"{where}: keys must be strings, got {bad[0]!r}")
        return dict(value)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where}: expected float, got {_describe(value)}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected int, got {_describe(value)}")
        return value
    if annotation in (str, bool):
        if not isinstance(value, annotation):
            raise ValueError(f"{where}: expected {annotation.__name__}, got {_describe(value)}")
        return value
    raise TypeError(f"{where}: unsupported annotation {annotation!r}")  # a bug in this module, not the user's


def _annotation_name(annotation: Any) -> str:
    args = typing.get_args(annotation)
    if args:
        return " or ".join("null" if a is type(None) else getattr(a, "__name__", str(a)) for a in args)
    return getattr(annotation, "__name__", str(annotation))


def _build(cls: type, data: Any, where: str) -> Any:
    """Instantiate dataclass ``cls`` from the mapping ``data`` (``where`` prefixes field names in errors)."""
    prefix = f"{where}." if where else ""
    if not isinstance(data, dict):
        raise ValueError(f"{where or 'config'}: expected a mapping, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [key for key in data if key not in fields]
    if unknown:
        raise ValueError(f"{prefix}{unknown[0]}: unknown key; expected one of {', '.join(fields)}")
    values = {}
    for name, spec in fields.items():
        if name in data:
            values[name] = _convert(data[name], hints[name], f"{prefix}{name}")
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise ValueError(f"{prefix}{name}: required field is missing")
    return cls(**values)


def _choice(value: str, options: tuple[str, ...], where: str) -> None:
    if value not in options:
        raise ValueError(f"{where}: unknown value {value!r}; expected one of {', '.join(options)}")


def _positive(value: float, where: str, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{where}: must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def validate(config: TrainConfig) -> TrainConfig:
    """Check names and ranges that types alone cannot (raises ``ValueError`` naming the field)."""
    from mrdserve.models.nets.registry import NETWORKS
    from mrdserve.models.training.losses import LOSSES

    _choice(config.task, TASKS, "task")
    _choice(config.network.name, tuple(sorted(NETWORKS)), "network.name")
    _choice(config.preparation.name, PREPARATIONS, "preparation.name")
    _choice(config.loss, tuple(LOSSES), "loss")
    _choice(config.data.kind, DATA_KINDS, "data.kind")
    _choice(config.optim.name, OPTIMIZERS, "optim.name")
    _choice(config.optim.scheduler, SCHEDULERS, "optim.scheduler")
    _choice(config.loop.device, DEVICES, "loop.device")
    _choice(config.loop.mixed_precision, MIXED_PRECISIONS, "loop.mixed_precision")
    if config.loop.mixed_precision != "none" and config.loop.amp:
        raise ValueError(f"loop.mixed_precision: {config.loop.mixed_precision!r} cannot be combined with "
                         "loop.amp (float16 with a gradient scaler); set one of them")
    if not config.name:
        raise ValueError("name: must not be empty")
    if config.data.kind != "synthetic" and not config.data.path:
        raise ValueError(f"data.path: required for data.kind {config.data.kind!r} (a directory of HDF5 files)")
    allowed = SYNTHETIC_GENERATOR_KEYS if config.data.kind == "synthetic" else FILE_GENERATOR_KEYS
    unknown = [key for key in config.data.generator if key not in allowed]
    if unknown:
        raise ValueError(f"data.generator.{unknown[0]}: unknown key for data.kind {config.data.kind!r}; "
                         f"expected one of {', '.join(allowed)}")
    if not 0.0 <= config.data.val_fraction < 1.0:
        raise ValueError(f"data.val_fraction: must lie in [0, 1), got {config.data.val_fraction!r}")
    _positive(config.data.train_size, "data.train_size")
    _positive(config.data.val_size, "data.val_size", allow_zero=True)
    _positive(config.optim.lr, "optim.lr")
    _positive(config.optim.weight_decay, "optim.weight_decay", allow_zero=True)
    if config.optim.grad_clip is not None:
        _positive(config.optim.grad_clip, "optim.grad_clip")
    _positive(config.loop.steps, "loop.steps", allow_zero=config.loop.init_from is not None)
    for name in ("batch_size", "checkpoint_every", "log_every"):
        _positive(getattr(config.loop, name), f"loop.{name}")
    for name in ("val_every", "val_examples", "num_workers"):
        _positive(getattr(config.loop, name), f"loop.{name}", allow_zero=True)
    _check_stagewise(config)
    from mrdserve.models.data.prepare import PREPARATION_SPECS

    spec = PREPARATION_SPECS[config.preparation.name]
    if config.task not in spec.tasks:
        raise ValueError(f"preparation.name: {config.preparation.name!r} serves {', '.join(spec.tasks)}, "
                         f"not task {config.task!r}")
    try:
        spec.resolve(config.preparation.params)
    except ValueError as exc:
        raise ValueError(f"preparation.params: {exc}") from exc
    return config


def network_stages(network: NetworkConfig) -> int:
    """How many training stages ``network`` has (its ``n_stages``); ``ValueError`` naming ``loop.stagewise`` when it
    has none. The network is built on the meta device: no memory, no initialisation cost."""
    import torch

    from mrdserve.models.nets.registry import NETWORKS, build_network

    if not callable(getattr(NETWORKS.get(network.name), "set_training_stage", None)):
        staged = sorted(name for name, cls in NETWORKS.items() if callable(getattr(cls, "set_training_stage", None)))
        raise ValueError(f"loop.stagewise: network {network.name!r} has no training stages; stage-wise training "
                         f"needs a network with set_training_stage ({', '.join(staged)}): remove loop.stagewise")
    try:
        with torch.device("meta"):
            model = build_network(network.name, **network.kwargs)
    except ValueError as exc:
        raise ValueError(f"network.kwargs: {exc}") from exc
    return int(model.n_stages)


def _check_stagewise(config: TrainConfig) -> None:
    stagewise = config.loop.stagewise
    if stagewise is None:
        return
    _positive(stagewise.steps_per_stage, "loop.stagewise.steps_per_stage")
    n_stages = network_stages(config.network)
    if n_stages * stagewise.steps_per_stage > config.loop.steps:
        raise ValueError(f"loop.stagewise.steps_per_stage: {n_stages} stages of {stagewise.steps_per_stage} steps "
                         f"need {n_stages * stagewise.steps_per_stage} steps, but loop.steps is {config.loop.steps}")


def config_from_dict(data: Any) -> TrainConfig:
    """Build and validate a ``TrainConfig`` from a plain mapping (as parsed from YAML or stored in a checkpoint)."""
    return validate(_build(TrainConfig, data, ""))


def read_yaml(path: str | Path) -> Any:
    """The parsed contents of a YAML config file (an empty file is ``{}``); ValueError when missing or not YAML."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    return data if data is not None else {}


def load_config(path: str | Path) -> TrainConfig:
    """Read a YAML config file into a validated ``TrainConfig`` (``ValueError`` naming the field on error)."""
    return config_from_dict(read_yaml(path))


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """The config as plain nested dicts (what a checkpoint stores; ``config_from_dict`` reads it back)."""
    return dataclasses.asdict(config)


def replace_loop(config: TrainConfig, **changes: Any) -> TrainConfig:
    """A copy of ``config`` with ``loop`` fields changed (command-line overrides), validated again."""
    return validate(dataclasses.replace(config, loop=dataclasses.replace(config.loop, **changes)))
