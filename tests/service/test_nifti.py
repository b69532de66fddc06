"""NIfTI output: the affine maps every voxel centre to the patient point DICOM gives it (LPS -> RAS), slices
stacked in position order, 3D volumes kept whole, frames (repetitions) as a 4th dimension."""

import dataclasses

import nibabel as nib
import numpy as np
import pydicom
import pytest

from mrdserve.service.outputs.dicom import write_dicom_series
from mrdserve.service.outputs.nifti import write_nifti
from tests.service.output_samples import classical_results, oblique_slices, simulated

LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])


@pytest.fixture(scope="module")
def cartesian(tmp_path_factory):
    return simulated(tmp_path_factory.mktemp("cartesian"))


def _dicom_point(ds: pydicom.Dataset, row: int, column: int) -> np.ndarray:
    """Patient (LPS) point of a pixel centre by the DICOM Image Plane equations."""
    orientation = np.asarray(ds.ImageOrientationPatient, dtype=float)
    spacing = np.asarray(ds.PixelSpacing, dtype=float)
    return (np.asarray(ds.ImagePositionPatient, dtype=float) + column * spacing[1] * orientation[:3]
            + row * spacing[0] * orientation[3:])


def test_affine_maps_voxels_to_the_dicom_patient_points(tmp_path, cartesian):
    header, samples = cartesian
    results = oblique_slices(samples[0])  # given in reverse slice order
    image = nib.load(write_nifti(results, header, tmp_path / "oblique.nii.gz"))
    files = sorted((pydicom.dcmread(p) for p in write_dicom_series(results, header, tmp_path / "dicom")),
                   key=lambda ds: float(ds.SliceLocation))
    data = np.asarray(image.dataobj)
    assert data.shape == (24, 20, 3)  # (x = columns, y = rows, slices)
    np.testing.assert_allclose(image.header.get_zooms(), (10.0, 9.0, 6.0), atol=1e-5)
    for k, ds in enumerate(files):
        for row, column in ((0, 0), (19, 0), (0, 23), (7, 11)):
            ras = image.affine @ np.array([column, row, k, 1.0])
            np.testing.assert_allclose(ras[:3], LPS_TO_RAS * _dicom_point(ds, row, column), atol=1e-4)
            # slice k is the k-th along the normal: slice index k, pixel value 1000 k + 10 row + column + 1
            assert data[column, row, k] == pytest.approx(1000 * k + 10 * row + column + 1)
    np.testing.assert_allclose(image.get_qform(), image.affine, atol=1e-4)
    assert int(image.header["sform_code"]) == 1


def test_3d_volume_affine_matches_dicom_partitions(tmp_path):
    header, samples = simulated(tmp_path, "cartesian3d", slices=1, matrix=16, partitions=8)
    [result] = classical_results(samples)
    image = nib.load(write_nifti([result], header, tmp_path / "volume.nii"))
    assert image.shape == (16, 16, 8)
    files = [pydicom.dcmread(p) for p in write_dicom_series([result], header, tmp_path / "dicom")]
    for k in (0, 3, 7):
        ras = image.affine @ np.array([5, 9, k, 1.0])
        np.testing.assert_allclose(ras[:3], LPS_TO_RAS * _dicom_point(files[k], 9, 5), atol=1e-4)
    np.testing.assert_allclose(np.asarray(image.dataobj)[:, :, 2], result.image[2].T, rtol=1e-6)


def test_repetitions_become_frames_and_mismatched_shapes_are_refused(tmp_path, cartesian):
    header, samples = cartesian
    results = classical_results(samples)
    repeated = [dataclasses.replace(r, sample=dataclasses.replace(
        r.sample, index=dataclasses.replace(r.sample.index, repetition=1))) for r in results]
    image = nib.load(write_nifti(results + repeated, header, tmp_path / "frames.nii.gz"))
    assert image.shape == (32, 32, 2, 2)
    broken = [results[0], dataclasses.replace(results[1], image=results[1].image[:16])]
    with pytest.raises(ValueError, match="cannot stack"):
        write_nifti(broken, header, tmp_path / "bad.nii")
