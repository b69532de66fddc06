"""Small reconstructed results for the output tests: simulated samples, classical images, oblique geometry."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from ismrmrd import xsd
from xsdata.models.datatype import XmlDate, XmlTime

from mrdserve.models.data.baseline import classical_reconstruction
from mrdserve.models.data.ismrmrd_io import read_ismrmrd
from mrdserve.models.data.sample import Geometry, KSpaceSample
from mrdserve.models.data.simulate import simulate_to_file
from mrdserve.service.engine.result import ReconResult


def rotation(alpha: float, beta: float, gamma: float) -> np.ndarray:
    """A proper rotation (z-y-x Euler angles, radians); its columns are the read, phase and slice directions."""
    ca, sa, cb, sb, cg, sg = np.cos(alpha), np.sin(alpha), np.cos(beta), np.sin(beta), np.cos(gamma), np.sin(gamma)
    rz = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]])
    ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    rx = np.array([[1, 0, 0], [0, cg, -sg], [0, sg, cg]])
    return rz @ ry @ rx


OBLIQUE = rotation(0.4, -0.3, 0.25)


def oblique_geometry(centre: tuple[float, float, float], fov: tuple[float, float, float]) -> Geometry:
    return Geometry(position=centre, read_dir=tuple(OBLIQUE[:, 0]), phase_dir=tuple(OBLIQUE[:, 1]),
                    slice_dir=tuple(OBLIQUE[:, 2]), patient_table_position=(0.0, 0.0, -1200.0),
                    field_of_view=fov)


def simulated(tmp_path: Path, trajectory: str = "cartesian", slices: int = 2, **kwargs: Any
              ) -> tuple[Any, list[KSpaceSample]]:
    """Header and samples of a small simulated file (2 coils, fully sampled, 32 x 32)."""
    path = tmp_path / f"{trajectory}.h5"
    simulate_to_file(path, trajectory=trajectory, coils=2, acceleration=1, matrix=kwargs.pop("matrix", 32),
                     slices=slices, seed=kwargs.pop("seed", 3), **kwargs)
    return read_ismrmrd(path)


def classical_results(samples: list[KSpaceSample], reason: str = "no artifact fits this data"
                      ) -> list[ReconResult]:
    out = []
    for sample in samples:
        made = classical_reconstruction(sample, method="rss")
        out.append(ReconResult.classical(made.image.numpy().astype(np.float32), sample, made.method,
                                          fallback_reason=reason))
    return out


def learned_result(image: np.ndarray, sample: KSpaceSample) -> ReconResult:
    return ReconResult(image.astype(np.float32), sample, "demo-test-1.2.0", artifact="demo-test", version="1.2.0")


def oblique_slices(sample: KSpaceSample, shape: tuple[int, int] = (20, 24), spacing_mm: float = 6.0,
                   fov: tuple[float, float, float] = (240.0, 180.0, 5.0), count: int = 3) -> list[ReconResult]:
    """``count`` parallel oblique slices ``spacing_mm`` apart, given in reverse order, with a ramp image each.

    Pixel (r, c) of slice s holds ``1000 s + 10 r + c + 1``, so any transposition or reordering shows.
    """
    centre = np.array([12.5, -30.0, 41.0])
    results = []
    for s in reversed(range(count)):
        position = tuple(float(v) for v in centre + s * spacing_mm * OBLIQUE[:, 2])
        moved = dataclasses.replace(sample, geometry=oblique_geometry(position, fov),
                                    index=dataclasses.replace(sample.index, slice=s))
        rows, columns = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
        results.append(learned_result(1000.0 * s + 10.0 * rows + columns + 1.0, moved))
    return results


def expected_top_left(result: ReconResult) -> np.ndarray:
    """Top-left pixel centre from the ISMRMRD definition, written out independently of the code under test."""
    g = result.sample.geometry
    n_y, n_x = result.image.shape[-2:]
    dx, dy = g.field_of_view[0] / n_x, g.field_of_view[1] / n_y
    return (np.asarray(g.position) - (n_x / 2) * dx * np.asarray(g.read_dir)
            - (n_y / 2) * dy * np.asarray(g.phase_dir))


def header_with_patient(header: Any) -> Any:
    """A copy of ``header`` with subject, study and measurement fields a scanner would fill in."""
    out = copy.deepcopy(header)
    out.subjectInformation = xsd.subjectInformationType(
        patientName="Doe^Jane", patientWeight_kg=61.5, patientID="PID-0042", patientBirthdate=XmlDate(1980, 1, 2),
        patientGender="F")
    out.studyInformation = xsd.studyInformationType(
        studyDate=XmlDate(2024, 3, 5), studyTime=XmlTime(9, 15, 30), studyID="S77", accessionNumber="ACC9",
        studyInstanceUID="1.2.826.0.1.3680043.8.498.1234", studyDescription="Brain research")
    out.measurementInformation.frameOfReferenceUID = "1.2.826.0.1.3680043.8.498.5678"
    out.measurementInformation.protocolName = "t1_flash"
    out.measurementInformation.initialSeriesNumber = 7
    out.sequenceParameters = xsd.sequenceParametersType(TR=[250.0], TE=[2.5], flipAngle_deg=[70.0],
                                                        sequence_type="Flash")
    return out
