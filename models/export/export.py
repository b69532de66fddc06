"""Export a trained checkpoint as a served artifact: TorchScript + ONNX + a validated manifest.

The exporter prepares a real sample of the checkpoint's task with the checkpoint's preparation (the same
``models.data.prepare.prepare_sample`` the trainer and the runtime use), exports the network, and checks
that TorchScript and ONNX Runtime reproduce eager PyTorch on that sample and on a batch of another size.
It refuses to write an artifact that does not: everything is written into a hidden temporary directory that
is renamed into place only after every check passed.
"""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrdserve.models.data.manifest_schema import MANIFEST_FILE, SCHEMA_VERSION, sha256_file, validate_manifest
from mrdserve.models.data.prepare import PreparedSample, collate, prepare_sample
from mrdserve.models.data.sample import KSpaceSample
from mrdserve.models.data.simulate import simulate_cartesian, simulate_noncartesian
from mrdserve.models.nets.registry import build_network

CHECKPOINT_FORMAT = "mrdserve-checkpoint/1"
DEMO_INTENDED_USE = (
    "Demonstration artifact trained on synthetic data only (simulated phantoms). It shows how mrdserve serves "
    "learned reconstructions; it is NOT a medical device and NOT for clinical or diagnostic use.")
REAL_DATA_INTENDED_USE = (
    "Research use only: a learned MRI reconstruction trained offline; not validated for clinical or "
    "diagnostic use.")

# Symbolic axis names of each network input, by rank (the last axis of real tensors holds re/im).
_AXES: dict[str, dict[int, list[Any]]] = {
    "kspace": {5: ["B", "C", "ky", "kx", 2]},
    "mask": {4: ["B", 1, "ky", "kx"]},
    "smaps": {5: ["B", "C", "y", "x", 2], 6: ["B", "C", "z", "y", "x", 2]},
    "adjoint": {4: ["B", "y", "x", 2], 5: ["B", "C", "y", "x", 2], 6: ["B", "C", "z", "y", "x", 2]},
    "kernel": {4: ["B", "y2", "x2", 2], 5: ["B", "z2", "y2", "x2", 2]},
}
_OUTPUT_AXES = {3: ["B", "y", "x"], 4: ["B", "z", "y", "x"]}
_DEFAULT_TRAJECTORY = {"cartesian2d-multicoil": "cartesian", "cartesian2d-singlecoil": "cartesian",
                       "noncartesian2d-multicoil": "radial", "noncartesian2d-singlecoil": "radial",
                       "noncartesian3d": "stack-of-stars"}


class ExportError(ValueError):
    """An export that was refused (failed verification, bad checkpoint, existing target)."""


@dataclass
class Verification:
    """Largest relative L2 errors of TorchScript and ONNX Runtime against eager over the checked batches."""

    torchscript_max_rel: float = 0.0
    onnx_max_rel: float = 0.0
    batches: list[int] = field(default_factory=list)


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """``||actual - expected|| / ||expected||`` (shapes must agree)."""
    if actual.shape != expected.shape:
        raise ExportError(f"output shape {actual.shape} differs from eager {expected.shape}")
    return float(np.linalg.norm(actual.astype(np.float64) - expected) / max(np.linalg.norm(expected), 1e-12))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a trainer checkpoint (contract ``mrdserve-checkpoint/1``) on CPU and check its required keys."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"checkpoint {path} not found")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ExportError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint (format {found!r})")
    for key in ("network", "task", "preparation", "model_state"):
        if key not in checkpoint:
            raise ExportError(f"{path}: checkpoint field {key!r} is missing")
    return checkpoint


def _generator(checkpoint: dict[str, Any]) -> dict[str, Any]:
    config = checkpoint.get("config") or {}
    data = config.get("data") or {} if isinstance(config, dict) else {}
    generator = data.get("generator") or {} if isinstance(data, dict) else {}
    return generator if isinstance(generator, dict) else {}


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list | tuple) and value and not isinstance(value[0], int | float) \
        else value


def _scalar_or_range(value: Any) -> tuple[float, float] | None:
    """(min, max) of a number or a list of numbers (e.g. accelerations), else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value), float(value)
    if isinstance(value, list | tuple) and value and all(isinstance(v, int | float) for v in value):
        return float(min(value)), float(max(value))
    return None


def _settings(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """Simulation settings for the checkpoint's task: the synthetic generator's where known, small defaults."""
    task = checkpoint["task"]
    gen = _generator(checkpoint)
    is_3d = task == "noncartesian3d"
    shape = gen.get("shape", gen.get("matrix"))
    if isinstance(shape, list | tuple) and shape and isinstance(shape[0], list | tuple):
        shape = shape[0]
    elif isinstance(shape, list | tuple) and len(shape) > (3 if is_3d else 2):  # varied data: a list of sizes N
        shape = int(shape[0])
    if shape is None:
        shape = (8, 16, 16) if is_3d else (32, 32)
    coils = gen.get("n_coils", gen.get("coils"))
    coils_range = _scalar_or_range(coils)
    n_coils = 1 if task.endswith("singlecoil") else int(coils_range[0]) if coils_range else 4
    if n_coils == 2 and coils_range and coils_range[1] > 2:
        # an example with 2 coils would make the exporter tie the coil axis to the real/imaginary axis (size 2)
        # and freeze it; take another trained count
        n_coils = int(min(4, coils_range[1]))
    acceleration = _scalar_or_range(gen.get("acceleration", gen.get("accelerations")))
    trajectory = _first(gen.get("trajectory", gen.get("trajectories"))) or _DEFAULT_TRAJECTORY[task]
    return {"shape": tuple(shape) if isinstance(shape, list | tuple) else int(shape), "n_coils": n_coils,
            "acceleration": acceleration[0] if acceleration else 4.0, "trajectory": str(trajectory)}


def simulated_samples(checkpoint: dict[str, Any], count: int = 3, seed: int = 1234) -> list[KSpaceSample]:
    """``count`` synthetic samples (slices) of the checkpoint's task, as the synthetic generator makes them."""
    settings = _settings(checkpoint)
    if checkpoint["task"].startswith("cartesian"):
        sim = simulate_cartesian(settings["shape"], n_coils=settings["n_coils"], acceleration=settings["acceleration"],
                                 n_slices=count, readout_oversampling=1, with_noise_scan=False, seed=seed)
        return [KSpaceSample(kspace=sim.kspace[i].contiguous(), matrix=sim.matrix, recon_matrix=sim.matrix,
                             trajectory_type="cartesian", mask=sim.mask[:, None], acs_mask=sim.acs[:, None],
                             acceleration=(round(sim.acceleration),)) for i in range(count)]
    sim = simulate_noncartesian(settings["trajectory"], settings["shape"], n_coils=settings["n_coils"],
                                acceleration=settings["acceleration"], n_slices=count, with_noise_scan=False,
                                seed=seed)
    kind = "radial" if sim.trajectory_type in ("stack-of-stars", "radial3d") else sim.trajectory_type
    return [KSpaceSample(kspace=sim.kspace[i].contiguous(), matrix=sim.matrix, recon_matrix=sim.matrix,
                         trajectory_type=kind, trajectory=sim.trajectory,
                         acceleration=(round(sim.acceleration),)) for i in range(count)]


def _prepared(checkpoint: dict[str, Any], sample: KSpaceSample | PreparedSample | None) -> list[PreparedSample]:
    """The real prepared samples to verify on: the given one, else three simulated slices of the task."""
    prep = checkpoint["preparation"]
    if isinstance(sample, PreparedSample):
        return [sample]
    samples = [sample] if sample is not None else simulated_samples(checkpoint)
    return [prepare_sample(s, prep["name"], prep.get("params") or {}) for s in samples]


def _source(sample: KSpaceSample | PreparedSample | None) -> str:
    return "simulated slices of the task (models.data.simulate)" if sample is None else "given sample"


def _batches(prepared: list[PreparedSample]) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    """(export example of batch 2, checks of batch 1 and 3): dynamic batch export needs a size other than 1."""
    cycle = [prepared[i % len(prepared)] for i in range(3)]
    return collate(cycle[:2]), [collate(cycle[:1]), collate(cycle)]


def _torchscript(model: torch.nn.Module, example: tuple[torch.Tensor, ...]) -> tuple[Any, str, list[str]]:
    """Script the model; fall back to tracing with a recorded note where scripting fails."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit deprecation notices
        try:
            return torch.jit.script(model), "script", []
        except Exception as exc:  # any scripting failure: trace instead, and say why
            traced = torch.jit.trace(model, example, check_trace=False)
            return traced, "trace", [f"torch.jit.script failed ({type(exc).__name__}); model.ts is traced, so "
                                     "data-dependent control flow is frozen to the export sample"]


def _axis_names(name: str, rank: int) -> list[Any]:
    return _AXES.get(name, {}).get(rank) or ["B", *[f"{name}_{i}" for i in range(1, rank)]]


def _dynamic_axes(example: dict[str, torch.Tensor], spatial: bool) -> list[dict[int, Any]]:
    """Per input, the axes exported as dynamic: batch always, coils, and spatial axes with ``spatial``.

    Axes of size <= 2 stay fixed (the re/im axis, a mask's singleton); sizes the exporter proves equal across
    inputs (``Dim.AUTO``) share one symbol, so e.g. k-space, mask and sensitivities keep one matrix size.
    """
    axes = []
    for key, tensor in example.items():
        names = _axis_names(key, tensor.dim())
        axes.append({i: torch.export.Dim.AUTO for i in range(tensor.dim())
                     if i == 0 or (tensor.shape[i] > 2 and (spatial or names[i] == "C"))})
    return axes


def _specialised_axes(path: Path, example: dict[str, torch.Tensor], requested: list[dict[int, Any]]) -> list[str]:
    """``input[axis]`` names of the requested non-batch dynamic axes the exporter nevertheless fixed."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != len(example):  # _verify reports the mismatch
        return []
    fixed = []
    for key, entry, axes in zip(example, inputs, requested, strict=True):
        dims = _dims(entry)
        names = _axis_names(key, len(dims))
        fixed += [f"{key}[{names[i]}]" for i in axes if i > 0 and dims[i] is not None]
    return fixed


def _export_onnx(model: torch.nn.Module, example: dict[str, torch.Tensor], path: Path, opset: int,
                 dynamic_spatial: bool = True) -> list[str]:
    """Dynamo ONNX export with the weights inside; batch and coil axes dynamic, spatial axes where feasible."""
    args = tuple(example.values())

    def export(spatial: bool) -> list[dict[int, Any]]:
        axes = _dynamic_axes(example, spatial)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, args, str(path), dynamo=True, opset_version=opset, external_data=False,
                              dynamic_shapes=tuple(axes), output_names=["image"], verbose=False, report=False)
        return axes

    if not dynamic_spatial:
        export(spatial=False)
        return ["spatial axes fixed on request; the matrix is fixed"]
    try:
        requested = export(spatial=True)
    except Exception as exc:  # dynamic spatial axes are best effort (some ops do not convert with them)
        export(spatial=False)
        return [f"dynamic spatial axes did not export ({type(exc).__name__}); the matrix is fixed"]
    fixed = _specialised_axes(path, example, requested)
    if fixed:
        return [f"the exporter fixed the axes {', '.join(fixed)}; those sizes are fixed"]
    return ["spatial axes are dynamic; equivalence was checked at the sample's matrix only"]


def _onnx_session(path: Path) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _verify(model: torch.nn.Module, scripted: Any, session: Any, batches: Sequence[dict[str, torch.Tensor]],
            tolerance: float) -> Verification:
    """Compare TorchScript and ONNX Runtime with eager on each batch; ExportError beyond ``tolerance``."""
    result = Verification()
    names = [i.name for i in session.get_inputs()]
    for batch in batches:
        args = tuple(batch.values())
        if len(names) != len(args):
            raise ExportError(f"the ONNX model takes {len(names)} inputs ({', '.join(names)}), the preparation "
                              f"gives {len(args)} ({', '.join(batch)})")
        with torch.no_grad():
            expected = model(*args).numpy()
            script_error = relative_error(scripted(*args).numpy(), expected)
        (onnx_out,) = session.run(None, {n: t.numpy() for n, t in zip(names, args, strict=True)})
        onnx_error = relative_error(onnx_out, expected)
        size = int(args[0].shape[0])
        result.batches.append(size)
        result.torchscript_max_rel = max(result.torchscript_max_rel, script_error)
        result.onnx_max_rel = max(result.onnx_max_rel, onnx_error)
        if not script_error <= tolerance:
            raise ExportError(f"TorchScript output differs from eager at batch {size}: relative error "
                              f"{script_error:.2e} > tolerance {tolerance:.1e}; no artifact written")
        if not onnx_error <= tolerance:
            raise ExportError(f"ONNX Runtime output differs from eager at batch {size}: relative error "
                              f"{onnx_error:.2e} > tolerance {tolerance:.1e}; no artifact written")
    return result


def _dims(value_info: Any) -> list[int | None]:
    """Axis sizes of an ONNX graph input/output, None where symbolic (dynamic)."""
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]


def _tensor_specs(entries: Sequence[Any], table: dict[int, list[Any]] | None) -> list[dict[str, Any]]:
    """Manifest input/output entries: symbolic names where the ONNX axis is dynamic, sizes where fixed."""
    import onnx

    specs = []
    for entry, description in entries:
        dims = _dims(entry)
        names = (table or {}).get(len(dims)) or _axis_names(entry.name, len(dims))
        shape = [name if size is None else size for name, size in zip(names, dims, strict=True)]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(entry.type.tensor_type.elem_type).name
        specs.append({"name": entry.name, "dtype": dtype, "shape": shape, "description": description})
    return specs


_DESCRIPTIONS = {
    "kspace": "masked multicoil k-space divided by the preparation's scale (view_as_real)",
    "mask": "sampling mask, 1 where measured",
    "smaps": "coil sensitivities (view_as_real)",
    "adjoint": "density-compensated adjoint A^H D y / scale (per coil when multicoil; view_as_real)",
    "kernel": "Toeplitz kernel of A^H D A, one per sample (view_as_real)",
}


def _io_specs(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    inputs = [(i, _DESCRIPTIONS.get(i.name, "")) for i in graph.input if i.name not in initializers]
    outputs = [(o, "magnitude image in the preparation's normalised units (times scale, cropped to recon)")
               for o in graph.output]
    return _tensor_specs(inputs, None), _tensor_specs(outputs, _OUTPUT_AXES)


def _range(value: Any, default: tuple[float, float], integer: bool) -> dict[str, Any]:
    low, high = _scalar_or_range(value) or default
    cast = int if integer else float
    return {"min": cast(low), "max": cast(high)}


def _constraints(checkpoint: dict[str, Any], inputs: list[dict[str, Any]], matrix: Sequence[int]) -> dict[str, Any]:
    """What the runtime may send this artifact: trajectory kinds, coil counts, matrix sizes, accelerations."""
    task = checkpoint["task"]
    gen = _generator(checkpoint)
    trajectories = gen.get("trajectory", gen.get("trajectories")) or _DEFAULT_TRAJECTORY[task]
    trajectories = [trajectories] if isinstance(trajectories, str) else list(trajectories)
    trajectories = ["radial" if t in ("stack-of-stars", "radial3d") and task != "noncartesian3d" else t
                    for t in trajectories]
    fixed = {name: axis for spec in inputs for name, axis in
             zip(_axis_names(spec["name"], len(spec["shape"])), spec["shape"], strict=True) if isinstance(axis, int)}
    if task.endswith("singlecoil"):
        coils = {"min": 1, "max": 1}
    elif "C" in fixed:  # the export froze the coil count
        coils = {"min": fixed["C"], "max": fixed["C"]}
    else:
        coils = {"min": 2, "max": 64}
    if any(axis in fixed for axis in ("y", "x", "ky", "kx", "z")):
        matrix_range = {"min": min(matrix), "max": max(matrix)}
    else:
        matrix_range = {"min": 16, "max": 256 if task == "noncartesian3d" else 512}
    acceleration = _range(gen.get("acceleration", gen.get("accelerations")), (1.0, 16.0), False)
    if task.startswith("noncartesian") or acceleration["min"] == acceleration["max"]:
        # a learned prior generalises a little around its training factor; say so rather than be silent
        acceleration = {"min": 1.0, "max": max(acceleration["max"] * 2, 2.0)}
    # fully sampled data always fit a named artifact (the validation envelope decides whether it is served)
    acceleration["min"] = min(acceleration["min"], 1.0)
    return {"trajectory": sorted(set(trajectories)), "coils": coils, "matrix": matrix_range,
            "acceleration": acceleration, "dims": 3 if task == "noncartesian3d" else 2}


def _jsonable(value: Any) -> Any:
    """A JSON-serialisable copy (tuples to lists, paths and other objects to strings)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, torch.Tensor | np.generic) and getattr(value, "size", lambda: 0) in (1, ()):
        return _jsonable(value.item())
    return str(value)


def _metrics(values: Any) -> dict[str, Any]:
    values = values if isinstance(values, dict) else {}
    if not any(k in values for k in ("psnr", "ssim", "nmse")):
        return {}
    return {k: _jsonable(values.get(k)) for k in ("psnr", "ssim", "nmse")} | \
        {k: _jsonable(v) for k, v in values.items() if k not in ("psnr", "ssim", "nmse")}


def frameworks() -> dict[str, str]:
    """Versions of the frameworks an artifact was exported with (its manifest's ``frameworks``)."""
    import onnx
    import onnxruntime

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version()}


def _intended_use(checkpoint: dict[str, Any]) -> str:
    kind = str((checkpoint.get("data") or {}).get("kind", ""))
    return DEMO_INTENDED_USE if kind in ("synthetic", "") else REAL_DATA_INTENDED_USE


def default_name(checkpoint: dict[str, Any]) -> str:
    """The config's run name, else ``<network>-<task>``, lower-cased to the manifest's name pattern."""
    config = checkpoint.get("config") or {}
    name = config.get("name") if isinstance(config, dict) else None
    name = name or f"{checkpoint['network']['name']}-{checkpoint['task']}"
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in str(name).lower()).strip("-._") or "model"


def export_checkpoint(checkpoint_path: str | Path, out_dir: str | Path, name: str | None = None,
                      version: str | None = None, sample: KSpaceSample | PreparedSample | None = None,
                      tolerance: float = 1e-4, opset: int = 18, overwrite: bool = False,
                      dynamic_spatial: bool = True) -> Path:
    """Export ``checkpoint_path`` to ``out_dir/<name>-<version>/`` and return that directory.

    ``sample`` (a KSpaceSample of the task, or an already prepared sample) is what equivalence is checked
    on; by default three synthetic slices of the task are simulated and prepared. Raises ExportError (a
    ValueError) and leaves nothing behind when TorchScript or ONNX Runtime differ from eager by more than
    ``tolerance`` (relative L2) on the sample or on a batch of another size. ``dynamic_spatial`` tries
    dynamic spatial axes in the ONNX model (falling back to a fixed matrix where they do not convert).
    """
    if opset < 18:
        raise ExportError(f"opset must be >= 18 (complex FFTs need the dynamo exporter at 18+), got {opset}")
    if not tolerance > 0:
        raise ExportError(f"tolerance must be > 0, got {tolerance}")
    checkpoint = load_checkpoint(checkpoint_path)
    network = checkpoint["network"]
    name = name or default_name(checkpoint)
    version = version or f"0.{int(checkpoint.get('step') or 0)}"
    out_dir = Path(out_dir)
    target = out_dir / f"{name}-{version}"
    if target.exists() and not overwrite:
        raise ExportError(f"artifact directory {target} already exists (pass overwrite to replace it)")

    model = build_network(network["name"], **(network.get("kwargs") or {}))
    model.load_state_dict(checkpoint["model_state"])
    model.eval()
    prepared = _prepared(checkpoint, sample)
    example, checks = _batches(prepared)

    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-{version}.", dir=out_dir))
    try:
        scripted, method, notes = _torchscript(model, tuple(example.values()))
        scripted.save(str(staging / "model.ts"))
        notes += _export_onnx(model, example, staging / "model.onnx", opset, dynamic_spatial)
        for leftover in staging.glob("*.data"):
            raise ExportError(f"the ONNX exporter wrote external weights ({leftover.name}); expected them inside")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit deprecation notice
            loaded = torch.jit.load(str(staging / "model.ts"), map_location="cpu")
        result = _verify(model, loaded, _onnx_session(staging / "model.onnx"), checks, tolerance)
        inputs, outputs = _io_specs(staging / "model.onnx")
        manifest = _manifest(checkpoint, name, version, model, inputs, outputs, prepared[0], result, method,
                             notes, tolerance, opset, staging)
        manifest["equivalence"]["sample"]["source"] = _source(sample)
        validate_manifest(manifest)
        publish(staging, target, manifest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def publish(staging: Path, target: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest`` into the finished ``staging`` directory and put it in ``target``'s place (replacing an
    older one), readable by the service's users (mkdtemp made it private)."""
    (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    staging.chmod(0o755)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)


def _manifest(checkpoint: dict[str, Any], name: str, version: str, model: torch.nn.Module,
              inputs: list[dict[str, Any]], outputs: list[dict[str, Any]], sample: PreparedSample,
              result: Verification, method: str, notes: list[str], tolerance: float, opset: int,
              staging: Path) -> dict[str, Any]:
    network = checkpoint["network"]
    metrics = checkpoint.get("metrics") or {}
    data = checkpoint.get("data") or {}
    equivalence: dict[str, Any] = {
        "torchscript_max_rel": result.torchscript_max_rel, "onnx_max_rel": result.onnx_max_rel,
        "tolerance": tolerance, "torchscript_method": method,
        "sample": {"task": checkpoint["task"], "matrix": list(sample.matrix), "batches": result.batches},
    }
    if notes:
        equivalence["notes"] = notes
    return {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "version": version,
        "network": {"name": network["name"], "kwargs": _jsonable(network.get("kwargs") or {}),
                    "parameters": int(sum(p.numel() for p in model.parameters()))},
        "task": checkpoint["task"],
        "preparation": {"name": checkpoint["preparation"]["name"],
                        "params": _jsonable(sample.params or checkpoint["preparation"].get("params") or {})},
        "inputs": inputs,
        "outputs": outputs,
        "constraints": _constraints(checkpoint, inputs, sample.matrix),
        "training": {
            "config": _jsonable(checkpoint.get("config") or {}),
            "steps": int(checkpoint.get("step") or 0),
            "seed": checkpoint.get("seed"),
            "git_commit": checkpoint.get("git_commit"),
            "data": {"kind": str(data.get("kind", "unknown")), "description": str(data.get("description", "")),
                     "version": str(data.get("version", ""))},
            "created": checkpoint.get("created"),
        },
        "validation": {"model": _metrics(metrics.get("model")),
                       "baselines": {str(k): _metrics(v) for k, v in (metrics.get("baselines") or {}).items()
                                     if _metrics(v)}},
        "equivalence": equivalence,
        "files": {f: sha256_file(staging / f) for f in ("model.ts", "model.onnx")},
        "frameworks": frameworks(),
        "intended_use": _intended_use(checkpoint),
        "opset": opset,
    }
