"""The training loop: seeded, resumable, validated against the classical baselines; CPU, one GPU or DDP.

Iterative models get two hooks: a network with ``forward_steps`` (RIM) is trained on the loss averaged over its
per-step outputs, and a network that keeps ``last_stats`` (a dict of numbers, e.g. a DEQ's forward iterations
and residual) has them logged after every step and kept in ``TrainResult.model_stats``.

``train(config)`` runs the steps below: ``build_run`` makes the datasets, the network (``models.nets.registry``),
the optimiser and scheduler and resumes from ``output_dir/latest.pt`` when asked; then ``loop.steps`` times
``training_step``, with ``validation_pass`` and ``save_run`` (checkpointing) every ``val_every`` /
``checkpoint_every`` steps and at the end. The data order is a pure function of (seed, step) (``StepSampler``),
and checkpoints hold model, optimiser, scheduler, scaler, RNG states and step, so a run interrupted at any
checkpoint continues exactly as if it had never stopped.
Under ``torchrun`` (``WORLD_SIZE`` > 1) the same code wraps the network in DistributedDataParallel, each rank
takes its own share of every step's examples, and rank 0 alone validates, logs and writes checkpoints. DDP
averages the gradients over ranks and every loss is a mean over its batch, so W ranks of B examples take the step
one process takes on the W * B examples together (tests/training/test_ddp.py); checkpoints move freely between
the two (same global batch). ``loop.mixed_precision: bf16`` runs the network's convolution blocks under bfloat16
autocast (``enable_mixed_precision``). Progress: a tqdm bar (loss, samples/s, ETA) when stderr is a terminal,
else a log line every ``loop.log_every`` steps. ``loop.stagewise`` (KIKI-net) trains the network's blocks one at
a time, then jointly (``StageSchedule``, ``enter_stage``): each stage gets a fresh optimiser over its own
parameters, and a checkpoint holds the optimiser of the stage that ran its last step, so a resumed run continues in
the right stage.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
import time
import types
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint as activation_checkpoint
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from mrdserve.models.nets.registry import build_network
from mrdserve.models.physics.masks import MaskFunc
from mrdserve.models.training import checkpoint as ckpt
from mrdserve.models.training.config import TrainConfig, config_to_dict, network_stages
from mrdserve.models.training.datasets import (
    FastMRIDataset,
    IsmrmrdDataset,
    SyntheticDataset,
    collate_examples,
    data_version,
)
from mrdserve.models.training.distributed import Distributed, init_distributed, mean_over_ranks, shutdown_distributed
from mrdserve.models.training.evaluate import evaluate
from mrdserve.models.training.losses import get_loss
from mrdserve.models.training.precision import enable_mixed_precision
from mrdserve.models.training.progress import Progress, stderr_is_interactive

log = logging.getLogger(__name__)
VAL_SEED_OFFSET = 1_000_003  # validation examples of synthetic data come from (seed + offset, index)
IMAGE_NET_LISTS = ("image_nets", "image_corrections")  # the per-iteration modules of unrolled networks


@dataclass
class TrainResult:
    """What a run did: final step, last checkpoint, the losses of the steps run now, last validation metrics."""

    step: int
    checkpoint: Path | None
    losses: list[float] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    resumed_from: int = 0
    model_stats: dict[str, float] = field(default_factory=dict)  # the network's last ``last_stats``, if any


# --- reproducibility and devices ---------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_determinism(enabled: bool) -> None:
    """Deterministic algorithms where torch has them (warn, not fail, where it does not)."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when available; ``cuda`` without a GPU is an error."""
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("loop.device: 'cuda' asked for but no CUDA device is available")
    return torch.device("cuda", local_rank)


# --- data --------------------------------------------------------------------------------------------------


class StepSampler(Sampler[int]):
    """Example indices for steps ``[start_step, end_step)``: a pure function of (seed, step), so a resumed run
    draws exactly what an uninterrupted one would. Epochs are fresh permutations; with ``world_size`` ranks,
    step s uses global positions ``s * B * W ... (s + 1) * B * W - 1`` and rank r takes its own ``B`` of them."""

    def __init__(self, n_examples: int, batch_size: int, seed: int, start_step: int, end_step: int,
                 rank: int = 0, world_size: int = 1) -> None:
        self.n_examples, self.batch_size, self.seed = n_examples, batch_size, seed
        self.start_step, self.end_step = start_step, end_step
        self.rank, self.world_size = rank, world_size
        self._permutations: dict[int, list[int]] = {}

    def _permutation(self, epoch: int) -> list[int]:
        if epoch not in self._permutations:
            generator = torch.Generator().manual_seed(self.seed * 1_000_033 + epoch)
            self._permutations = {epoch: torch.randperm(self.n_examples, generator=generator).tolist()}
        return self._permutations[epoch]

    def __iter__(self) -> Iterator[int]:
        per_step = self.batch_size * self.world_size
        for step in range(self.start_step, self.end_step):
            first = step * per_step + self.rank * self.batch_size
            for position in range(first, first + self.batch_size):
                yield self._permutation(position // self.n_examples)[position % self.n_examples]

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step) * self.batch_size


class CachedDataset(Dataset):
    """Keeps each prepared example after its first use (datasets here are deterministic per index)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self._examples: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        if index not in self._examples:
            self._examples[index] = self.dataset[index]
        return self._examples[index]

    def sample(self, index: int) -> Any:
        """The k-space sample behind ``index`` (for the baselines), from the wrapped dataset."""
        from mrdserve.models.training.evaluate import sample_of

        return sample_of(self.dataset, index)


def _mask_func(generator: dict[str, Any]) -> MaskFunc:
    from mrdserve.models.data.simulate import MASK_TYPES

    kind = generator.get("mask_type", "equispaced_fraction")
    if kind not in MASK_TYPES:
        raise ValueError(f"data.generator.mask_type: expected one of {', '.join(MASK_TYPES)}, got {kind!r}")
    return MASK_TYPES[kind](list(generator.get("center_fractions", [0.08])),
                            list(generator.get("accelerations", [4])))


def _split_by_file(dataset: Any, val_fraction: float) -> tuple[Dataset, Dataset]:
    """Hold out the last ``val_fraction`` of the files (at least one) of a file dataset for validation."""
    n_files = len(dataset.files)
    n_val = max(1, round(n_files * val_fraction)) if val_fraction > 0 and n_files > 1 else 0
    cutoff = n_files - n_val
    train = [i for i, (number, _) in enumerate(dataset.index) if number < cutoff]
    val = [i for i, (number, _) in enumerate(dataset.index) if number >= cutoff]
    return Subset(dataset, train), Subset(dataset, val)


def build_datasets(config: TrainConfig) -> tuple[Dataset, Dataset, dict[str, str]]:
    """Training and validation datasets of ``config.data`` and the checkpoint's data provenance entry."""
    data, prep = config.data, config.preparation
    if data.kind == "synthetic":
        common = {"task": config.task, "preparation": prep.name, "params": prep.params, **data.generator}
        try:
            train = SyntheticDataset(n_examples=data.train_size, seed=config.seed, **common)
            val: Dataset = SyntheticDataset(n_examples=max(data.val_size, 1), seed=config.seed + VAL_SEED_OFFSET,
                                            **common)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"data.generator: {exc}") from exc
        if data.val_size == 0:
            val = Subset(val, [])
        description = (f"synthetic {config.task}: {data.train_size} training / {data.val_size} validation "
                       f"examples, generator {data.generator}")
        version = data_version(train)
        return train, val, {"kind": data.kind, "description": description, "version": version}
    cls = FastMRIDataset if data.kind == "fastmri" else IsmrmrdDataset
    mask = _mask_func(data.generator) if (data.kind == "fastmri" or data.generator) else None
    kwargs = {"preparation": prep.name, "params": prep.params}
    full = cls(data.path, mask, seed=config.seed, **kwargs)
    if data.val_path:
        train, val = full, cls(data.val_path, mask, seed=config.seed + VAL_SEED_OFFSET, **kwargs)
        version = f"{data_version(full)}+{data_version(val)}"
    else:
        train, val = _split_by_file(full, data.val_fraction)
        version = f"{data_version(full)}/split{data.val_fraction:g}"
    description = f"{data.kind} files in {data.path} ({len(train)} training / {len(val)} validation slices)"
    return train, val, {"kind": data.kind, "description": description, "version": version}


class PerStepOutputs(nn.Module):
    """Runs a model's ``forward_steps`` as ``forward`` (so DDP wraps it as usual): a list of per-step outputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any, **kwargs: Any) -> list[torch.Tensor]:
        return self.model.forward_steps(*args, **kwargs)


def training_loss(loss_fn: Any, batch: Any, output: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    """The loss of one output, or the mean of the losses of per-step outputs (RIM: loss averaged over steps)."""
    outputs = output if isinstance(output, list | tuple) else [output]
    losses = [loss_fn(batch.crop(out).float(), batch.target) for out in outputs]
    return torch.stack(losses).mean() if len(losses) > 1 else losses[0]


def model_stats(model: nn.Module) -> dict[str, float]:
    """The numbers in the model's ``last_stats`` dict (DEQ: forward iterations, residual); empty if none."""
    stats = getattr(model, "last_stats", None)
    if not isinstance(stats, dict):
        return {}
    return {str(k): v for k, v in stats.items() if isinstance(v, int | float) and not isinstance(v, bool)}


# --- model, optimiser --------------------------------------------------------------------------------------


def _checkpointed_forward(module: nn.Module, original: Any, *args: Any, **kwargs: Any) -> Any:
    if torch.is_grad_enabled() and module.training:
        return activation_checkpoint(original, *args, use_reentrant=False, **kwargs)
    return original(*args, **kwargs)


def enable_gradient_checkpointing(model: nn.Module) -> int:
    """Recompute each unrolled iteration's image net during backward instead of storing its activations.

    Replaces ``forward`` on each module of the network's ``image_nets``/``image_corrections`` list (instance
    attribute, so the state dict and the network class are unchanged); returns how many were wrapped.
    """
    wrapped = 0
    for name in IMAGE_NET_LISTS:
        for module in getattr(model, name, None) or []:
            original = module.forward
            module.forward = types.MethodType(
                lambda self, *a, _orig=original, **k: _checkpointed_forward(self, _orig, *a, **k), module)
            wrapped += 1
    if wrapped == 0:
        warnings.warn(f"gradient checkpointing: {type(model).__name__} has no {' or '.join(IMAGE_NET_LISTS)}; "
                      "nothing wrapped", stacklevel=2)
    return wrapped


def build_optimizer(config: TrainConfig, parameters: Any) -> torch.optim.Optimizer:
    """RAdam, Adam or AdamW with ``optim.lr`` and ``optim.weight_decay``."""
    classes = {"radam": torch.optim.RAdam, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    return classes[config.optim.name](parameters, lr=config.optim.lr, weight_decay=config.optim.weight_decay)


def build_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, steps: int | None = None) -> Any:
    """None, StepLR (step_size, gamma) or CosineAnnealingLR (t_max = ``steps`` unless given, eta_min); ``steps``
    defaults to loop.steps (a stage of stage-wise training passes its own length)."""
    params = dict(config.optim.scheduler_params)
    try:
        if config.optim.scheduler == "step":
            return torch.optim.lr_scheduler.StepLR(optimizer, step_size=int(params.pop("step_size", 1000)),
                                                   gamma=float(params.pop("gamma", 0.5)), **params)
        if config.optim.scheduler == "cosine":
            t_max = int(params.pop("t_max", config.loop.steps if steps is None else steps))
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t_max,
                                                              eta_min=float(params.pop("eta_min", 0.0)), **params)
    except TypeError as exc:
        raise ValueError(f"optim.scheduler_params: {exc}") from exc
    return None


def _tensorboard(directory: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # tensorboard is optional at run time
        warnings.warn(f"TensorBoard logging disabled: {exc}", stacklevel=2)
        return None
    return SummaryWriter(str(directory))


@contextlib.contextmanager
def _rng_neutral() -> Iterator[None]:
    """Run a block (validation) without disturbing any RNG stream of the training run."""
    state = ckpt.capture_rng()
    try:
        yield
    finally:
        ckpt.restore_rng(state)


def initialise_from(model: nn.Module, source: Path) -> int:
    """Copy the parameters of the same name and shape from a checkpoint or an artifact's TorchScript model."""
    if source.is_dir():
        source = source / "model.ts"
    if not source.is_file():
        raise ValueError(f"loop.init_from: {source} not found (a checkpoint .pt or an artifact directory)")
    if source.suffix == ".ts":
        state = torch.jit.load(str(source), map_location="cpu").state_dict()
    else:
        state = ckpt.load_checkpoint(source, map_location="cpu")["model_state"]
    own = model.state_dict()
    matching = {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    if not matching:
        raise ValueError(f"loop.init_from: no parameter of {source} matches the network {type(model).__name__}")
    own.update(matching)
    model.load_state_dict(own)
    if len(matching) < len(own):
        log.warning("loop.init_from: %d of %d parameter tensors copied from %s; the rest keep their fresh "
                    "initialisation", len(matching), len(own), source)
    return len(matching)


def _check_compatible(saved: dict[str, Any], config: TrainConfig, path: Path) -> None:
    current = config_to_dict(config)
    for key in ("task", "network", "preparation", "data", "seed", "loss"):
        if saved["config"].get(key) != current[key]:
            raise ValueError(f"{key}: the run in {path.parent} was started with {saved['config'].get(key)!r}, "
                             f"the config now says {current[key]!r}; use a new output_dir or --no-resume")
    stagewise = saved["config"].get("loop", {}).get("stagewise")  # its optimiser covers one stage's parameters
    if stagewise != current["loop"]["stagewise"]:
        raise ValueError(f"loop.stagewise: the run in {path.parent} was started with {stagewise!r}, the config now "
                         f"says {current['loop']['stagewise']!r}; use a new output_dir or --no-resume")


# --- stage-wise training -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageSchedule:
    """``loop.stagewise``: stage s (0-based) trains steps ``[s * steps_per_stage, (s + 1) * steps_per_stage)``;
    the steps after the last of the ``n_stages`` stages train every parameter (stage None)."""

    n_stages: int
    steps_per_stage: int
    steps: int  # loop.steps

    def stage_at(self, step: int) -> int | None:
        """The stage that runs step ``step`` (0-based: the number of steps done before it)."""
        stage = step // self.steps_per_stage
        return stage if stage < self.n_stages else None

    def length(self, stage: int | None) -> int:
        """How many steps ``stage`` runs (None: the joint steps after the last stage)."""
        return self.steps_per_stage if stage is not None else self.steps - self.n_stages * self.steps_per_stage


def stage_schedule(config: TrainConfig) -> StageSchedule | None:
    """The stage schedule of ``loop.stagewise``, or None for joint training."""
    stagewise = config.loop.stagewise
    if stagewise is None:
        return None
    return StageSchedule(network_stages(config.network), stagewise.steps_per_stage, config.loop.steps)


# --- the run -------------------------------------------------------------------------------------------------


@dataclass
class TrainingRun:
    """What ``build_run`` sets up and the training step, the validation pass and checkpointing share."""

    config: TrainConfig
    dist: Distributed
    device: torch.device
    output_dir: Path
    model: nn.Module  # the network itself (what checkpoints and validation see)
    network: nn.Module  # what the training step calls: per-step outputs and/or DDP around ``model``
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    use_amp: bool
    loader: DataLoader
    loss_fn: Any
    val_set: Dataset
    val_indices: list[int]
    data_info: dict[str, str]
    config_dict: dict[str, Any]
    writer: Any  # TensorBoard SummaryWriter on rank 0, else None
    start_step: int
    latest: Path | None  # the checkpoint resumed from
    metrics: dict[str, Any]  # the last validation metrics
    baseline_cache: dict[str, Any]  # per-volume baseline metrics of earlier validations (computed once)
    stages: StageSchedule | None = None  # loop.stagewise, or None (joint training)
    stage: int | None = None  # the stage the optimiser belongs to (None: every parameter)


def build_model(config: TrainConfig, device: torch.device) -> nn.Module:
    """The network of ``config.network`` on ``device``, initialised from ``loop.init_from`` when given, with
    gradient checkpointing and mixed precision when ``loop.grad_checkpointing`` / ``loop.mixed_precision`` ask."""
    model = build_network(config.network.name, **config.network.kwargs).to(device)
    if config.loop.init_from:
        copied = initialise_from(model, Path(config.loop.init_from))
        log.info("initialised %d parameter tensors from %s", copied, config.loop.init_from)
    if config.loop.grad_checkpointing:
        enable_gradient_checkpointing(model)
    if config.loop.mixed_precision != "none":
        regions = enable_mixed_precision(model, device, config.loop.mixed_precision)
        log.info("mixed precision %s: %d convolution blocks under autocast", config.loop.mixed_precision, regions)
    return model


def restore_checkpoint(path: Path, config: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
                       scheduler: Any, scaler: torch.amp.GradScaler, device: torch.device,
                       saved: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    """Load model, optimiser, scheduler, scaler and RNG states from ``path`` (or from ``saved``, its contents
    already read); return its step and metrics."""
    if saved is None:
        saved = ckpt.load_checkpoint(path, map_location=device)
    _check_compatible(saved, config, path)
    model.load_state_dict(saved["model_state"])
    optimizer.load_state_dict(saved["optimizer_state"])
    if scheduler is not None and saved["scheduler_state"] is not None:
        scheduler.load_state_dict(saved["scheduler_state"])
    if scaler.is_enabled() and saved["scaler_state"] is not None:
        scaler.load_state_dict(saved["scaler_state"])
    ckpt.restore_rng(saved["rng"])
    step = int(saved["step"])
    log.info("resumed from %s at step %d", path, step)
    return step, dict(saved["metrics"])


def wrap_network(model: nn.Module, dist: Distributed, device: torch.device) -> nn.Module:
    """``model`` as the training step calls it: ``forward_steps`` as forward for iterative models, DDP when
    there is more than one rank."""
    network: nn.Module = PerStepOutputs(model) if callable(getattr(model, "forward_steps", None)) else model
    if dist.world_size > 1:
        network = nn.parallel.DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda"
                                                      else None)
    return network


def step_loader(config: TrainConfig, train_set: Dataset, dist: Distributed, device: torch.device,
                start_step: int) -> DataLoader:
    """Batches for steps ``[start_step, loop.steps)`` of this rank, in ``StepSampler``'s (seed, step) order."""
    return DataLoader(
        train_set, batch_size=config.loop.batch_size, collate_fn=collate_examples,
        sampler=StepSampler(len(train_set), config.loop.batch_size, config.seed, start_step, config.loop.steps,
                            dist.rank, dist.world_size),
        num_workers=config.loop.num_workers, pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(config.seed + start_step))


def build_run(config: TrainConfig, resume: bool = True) -> TrainingRun:
    """Devices, seeds, data, network, optimiser and scheduler of ``config``; with ``resume``, their state and
    the RNGs restored from ``output_dir/latest.pt`` when it exists."""
    dist = init_distributed(config.loop.device)
    device = resolve_device(config.loop.device, dist.local_rank)
    configure_determinism(config.loop.deterministic)
    seed_everything(config.seed)
    output_dir = Path(config.output_dir)
    train_set, val_set, data_info = build_datasets(config)
    if config.data.cache:
        train_set, val_set = CachedDataset(train_set), CachedDataset(val_set)
    model = build_model(config, device)
    latest = ckpt.latest_checkpoint(output_dir) if resume else None
    saved = ckpt.load_checkpoint(latest, map_location=device) if latest is not None else None
    stages, stage = stage_schedule(config), None
    if stages is not None:  # the optimiser of the stage that ran the checkpoint's last step (or the first stage)
        stage = stages.stage_at(max(int(saved["step"]) - 1, 0) if saved is not None else 0)
        optimizer = build_optimizer(config, model.set_training_stage(stage))
        scheduler = build_scheduler(config, optimizer, stages.length(stage))
    else:
        optimizer = build_optimizer(config, model.parameters())
        scheduler = build_scheduler(config, optimizer)
    use_amp = config.loop.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start_step, metrics = 0, {}
    if latest is not None:
        start_step, metrics = restore_checkpoint(latest, config, model, optimizer, scheduler, scaler, device, saved)
    return TrainingRun(
        config=config, dist=dist, device=device, output_dir=output_dir, model=model,
        network=wrap_network(model, dist, device), optimizer=optimizer, scheduler=scheduler, scaler=scaler,
        use_amp=use_amp, loader=step_loader(config, train_set, dist, device, start_step),
        loss_fn=get_loss(config.loss), val_set=val_set,
        val_indices=list(range(min(config.loop.val_examples, len(val_set)))),
        data_info=data_info, config_dict=config_to_dict(config),
        writer=_tensorboard(output_dir / "tensorboard") if dist.is_main else None,
        start_step=start_step, latest=latest, metrics=metrics,
        baseline_cache={row["volume"]: row["baselines"] for row in metrics.get("per_volume", [])},
        stages=stages, stage=stage)


def enter_stage(run: TrainingRun, stage: int | None) -> None:
    """Stage-wise training: train ``stage`` from here on (None: every parameter), with a fresh optimiser over its
    trainable parameters and a fresh schedule over its steps. The previous stage's gradients are dropped (frozen
    parameters would otherwise keep them and count in the clipped gradient norm), and DDP wraps the network anew
    (it registers the parameters that need gradients when it wraps)."""
    if run.stages is None:
        raise ValueError("enter_stage: the run has no loop.stagewise")
    run.model.zero_grad(set_to_none=True)
    run.optimizer = build_optimizer(run.config, run.model.set_training_stage(stage))
    run.scheduler = build_scheduler(run.config, run.optimizer, run.stages.length(stage))
    run.network = wrap_network(run.model, run.dist, run.device)
    run.stage = stage
    log.info("stage-wise training: %s", "every parameter (joint)" if stage is None else f"stage {stage}")


def advance_stage(run: TrainingRun, step: int) -> None:
    """Before step ``step`` (0-based) of a stage-wise run: enter its stage when the run is not in it yet."""
    if run.stages is not None and run.stages.stage_at(step) != run.stage:
        enter_stage(run, run.stages.stage_at(step))


def end_stages(run: TrainingRun) -> None:
    """After a stage-wise run: every parameter trainable and every block run again (what is saved and exported)."""
    if run.stages is not None:
        run.model.set_training_stage(None)


# --- the steps -----------------------------------------------------------------------------------------------


def forward_backward(run: TrainingRun, batch: Any) -> torch.Tensor:
    """Forward (float16 autocast with ``loop.amp``), loss and backward on this rank's ``batch``: leaves the
    gradients on the parameters (under DDP averaged over the ranks) and returns this rank's detached loss. A DEQ
    with OPA updates (``opa_every``) gets the step's loss as its ``outer_loss`` first."""
    batch = batch.to(run.device, non_blocking=True)
    if getattr(run.model, "opa_every", 0):  # the DEQ's OPA updates follow the gradient of this step's loss
        run.model.outer_loss = lambda out: run.loss_fn(batch.crop(out).float(), batch.target)
    with torch.autocast(run.device.type, enabled=run.use_amp):
        output = run.network(**batch.inputs)
    loss = training_loss(run.loss_fn, batch, output)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    return loss.detach()


def training_step(run: TrainingRun, batch: Any) -> float:
    """One optimisation step on ``batch``: ``forward_backward``, clipping, optimiser and scheduler; returns the
    step's loss (the mean over the ranks under DDP, so it matches one process on the whole step's examples)."""
    loss = forward_backward(run, batch)
    if run.config.optim.grad_clip is not None:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.config.optim.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    if run.scheduler is not None:
        run.scheduler.step()
    return mean_over_ranks(loss, run.dist)


def log_training_step(run: TrainingRun, progress: Progress, step: int, loss: float, stats: dict[str, float],
                      examples_per_s: float, elapsed_s: float) -> None:
    """Loss, the model's stats and throughput on the progress bar (or log line) and in TensorBoard."""
    progress.report(step, loss, stats, examples_per_s, elapsed_s)
    if run.writer is None:
        return
    run.writer.add_scalar("train/loss", loss, step)
    for key, number in stats.items():
        run.writer.add_scalar(f"train/{key}", number, step)
    run.writer.add_scalar("train/lr", run.optimizer.param_groups[0]["lr"], step)
    run.writer.add_scalar("train/examples_per_s", examples_per_s, step)


def validation_pass(run: TrainingRun, step: int) -> dict[str, Any]:
    """Model and baseline metrics on the validation examples (RNG streams untouched), logged; rank 0 only."""
    with _rng_neutral():
        evaluation = evaluate(run.model, run.val_set, run.val_indices, run.device, run.baseline_cache,
                              amp=run.use_amp)
    metrics = {"step": step, **evaluation.metrics}
    _log_validation(run.writer, metrics, step)
    return metrics


def save_run(run: TrainingRun, step: int) -> Path:
    """Checkpoint the run at ``step`` (model, optimiser, scheduler, scaler, RNGs, metrics); rank 0 only."""
    saved = ckpt.build_checkpoint(config=run.config_dict, model=run.model, optimizer=run.optimizer,
                                  scheduler=run.scheduler, scaler=run.scaler, step=step, data=run.data_info,
                                  metrics=run.metrics)
    return ckpt.save_checkpoint(saved, run.output_dir)


def validate_and_save(run: TrainingRun, result: TrainResult, step: int, validate: bool) -> None:
    """Rank 0 validates (when asked and there are validation examples) and checkpoints; then all ranks meet."""
    if run.dist.is_main:
        if validate and run.val_indices:
            run.metrics = validation_pass(run, step)
        result.checkpoint = save_run(run, step)
    if run.dist.world_size > 1:
        torch.distributed.barrier()


# --- the loop ------------------------------------------------------------------------------------------------


def train(config: TrainConfig, resume: bool = True, interactive: bool | None = None) -> TrainResult:
    """Train as ``config`` says; with ``resume``, continue from ``output_dir/latest.pt`` when it exists.
    ``interactive`` (default: whether stderr is a terminal) chooses the progress bar over log lines."""
    run = build_run(config, resume)
    try:
        return train_steps(run, stderr_is_interactive() if interactive is None else interactive)
    finally:
        shutdown_distributed(run.dist)


def train_steps(run: TrainingRun, interactive: bool = False) -> TrainResult:
    """Run the steps of a built run from its start step to loop.steps: training, logging, validation, checkpoints
    (and the stages of loop.stagewise, leaving every parameter trainable at the end)."""
    loop = run.config.loop
    progress = Progress(loop.steps, run.start_step, run.dist.is_main, interactive)
    result = TrainResult(step=run.start_step, checkpoint=run.latest, metrics=run.metrics,
                         resumed_from=run.start_step)
    run.network.train()
    step, started, examples = run.start_step, time.perf_counter(), 0
    with progress:
        for batch in run.loader:
            advance_stage(run, step)
            loss = training_step(run, batch)
            step += 1
            examples += len(batch) * run.dist.world_size
            result.losses.append(loss)
            stats = model_stats(run.model)
            if stats:
                result.model_stats = stats
            if step % loop.log_every == 0 or step == loop.steps:
                elapsed = max(time.perf_counter() - started, 1e-9)
                log_training_step(run, progress, step, loss, stats, examples / elapsed, elapsed)
            progress.advance()
            periodic_val = loop.val_every > 0 and step % loop.val_every == 0
            at_end = step == loop.steps
            if periodic_val or step % loop.checkpoint_every == 0 or at_end:
                validate_and_save(run, result, step, validate=periodic_val or at_end)
    end_stages(run)
    if run.writer is not None:
        run.writer.close()
    if step == run.start_step and run.latest is None:  # no step ran and no file yet: still leave one
        validate_and_save(run, result, step, validate=True)  # (every rank: it ends in a barrier)
    result.step, result.metrics = step, run.metrics
    return result


def _log_validation(writer: Any, metrics: dict[str, Any], step: int) -> None:
    model = metrics.get("model", {})
    log.info("step %d validation: model %s; baselines %s", step, model, metrics.get("baselines"))
    if writer is None:
        return
    for name in ("psnr", "ssim", "nmse"):
        if name in model:
            writer.add_scalar(f"val/{name}/model", model[name], step)
        for baseline, values in metrics.get("baselines", {}).items():
            if name in values:
                writer.add_scalar(f"val/{name}/{baseline}", values[name], step)


def with_overrides(config: TrainConfig, **loop_changes: Any) -> TrainConfig:
    """``config`` with some ``loop`` fields replaced (tests, benchmarks)."""
    return dataclasses.replace(config, loop=dataclasses.replace(config.loop, **loop_changes))
