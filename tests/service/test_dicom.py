"""DICOM output: MR Image Storage files whose geometry, pixels, UIDs and patient/study fields are right, and
that the dicom3tools validator reports no errors for."""

import dataclasses
import shutil
import subprocess

import numpy as np
import pydicom
import pytest
from pydicom.uid import MRImageStorage

from mrdserve.service.outputs.dicom import write_dicom_series
from tests.service.output_samples import (
    OBLIQUE,
    classical_results,
    expected_top_left,
    header_with_patient,
    oblique_slices,
    simulated,
)

DCIODVFY = shutil.which("dciodvfy")


@pytest.fixture(scope="module")
def cartesian(tmp_path_factory):
    return simulated(tmp_path_factory.mktemp("cartesian"))


def _stored_to_data(ds: pydicom.Dataset) -> np.ndarray:
    mapping = ds.RealWorldValueMappingSequence[0]
    return ds.pixel_array.astype(np.float64) * float(mapping.RealWorldValueSlope)


def test_oblique_slices_have_exact_position_orientation_and_spacing(tmp_path, cartesian):
    header, samples = cartesian
    results = oblique_slices(samples[0])
    paths = write_dicom_series(results, header, tmp_path)
    assert len(paths) == 3
    for result, path in zip(results, paths, strict=True):
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == MRImageStorage and ds.Modality == "MR"
        np.testing.assert_allclose(np.asarray(ds.ImageOrientationPatient, dtype=float),
                                   np.concatenate([OBLIQUE[:, 0], OBLIQUE[:, 1]]), atol=1e-9)
        np.testing.assert_allclose(np.asarray(ds.ImagePositionPatient, dtype=float), expected_top_left(result),
                                   atol=1e-6)
        # PixelSpacing is [between rows (phase), between columns (read)] = [180/20, 240/24]
        np.testing.assert_allclose(np.asarray(ds.PixelSpacing, dtype=float), [9.0, 10.0])
        assert float(ds.SliceThickness) == 5.0
        assert (ds.Rows, ds.Columns) == (20, 24)
        # the pixel at the ISMRMRD centre index (ny//2, nx//2) lies on the slice position
        row_cos = np.asarray(ds.ImageOrientationPatient[:3], dtype=float)
        col_cos = np.asarray(ds.ImageOrientationPatient[3:], dtype=float)
        spacing = np.asarray(ds.PixelSpacing, dtype=float)
        centre = np.asarray(ds.ImagePositionPatient, dtype=float) + 12 * spacing[1] * row_cos \
            + 10 * spacing[0] * col_cos
        np.testing.assert_allclose(centre, result.sample.geometry.position, atol=1e-6)
        # pixels keep their (row, column) order and the dynamic range (values to within one stored step)
        np.testing.assert_allclose(_stored_to_data(ds), result.image,
                                   atol=float(ds.RealWorldValueMappingSequence[0].RealWorldValueSlope))
        assert "demo-test 1.2.0" in ds.ImageComments
        assert list(ds.ImageType)[:2] == ["DERIVED", "PRIMARY"] and ds.Manufacturer == "mrdserve"
    # slice locations step by the slice spacing along the normal
    locations = sorted(float(pydicom.dcmread(p).SliceLocation) for p in paths)
    np.testing.assert_allclose(np.diff(locations), [6.0, 6.0], atol=1e-6)


def test_series_uids_are_consistent_and_instances_unique(tmp_path, cartesian):
    header, samples = cartesian
    files = [pydicom.dcmread(p) for p in write_dicom_series(classical_results(samples), header, tmp_path / "a")]
    assert len({ds.StudyInstanceUID for ds in files}) == 1
    assert len({ds.SeriesInstanceUID for ds in files}) == 1
    assert len({ds.FrameOfReferenceUID for ds in files}) == 1
    assert len({ds.SOPInstanceUID for ds in files}) == len(files)
    assert [int(ds.InstanceNumber) for ds in files] == [1, 2]
    assert all(ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID for ds in files)
    assert "classical rss (fallback: no artifact fits this data)" in files[0].ImageComments
    # defaults when the header has no patient: anonymous but present
    anonymous = dataclasses.replace(header, subjectInformation=None)
    [unnamed] = [pydicom.dcmread(p) for p in write_dicom_series(classical_results(samples[:1]), anonymous,
                                                                tmp_path / "anonymous")]
    assert str(unnamed.PatientName).startswith("Anonymous") and unnamed.PatientID == "ANONYMOUS"
    assert files[0].PatientID == "PHANTOM00001"  # a simulated header's synthetic patient id
    again = pydicom.dcmread(write_dicom_series(classical_results(samples[:1]), header, tmp_path / "b")[0])
    assert again.SeriesInstanceUID != files[0].SeriesInstanceUID


def test_patient_and_study_fields_come_from_the_header(tmp_path, cartesian):
    header, samples = cartesian
    ds = pydicom.dcmread(write_dicom_series(classical_results(samples[:1]), header_with_patient(header),
                                            tmp_path)[0])
    assert str(ds.PatientName) == "Doe^Jane" and ds.PatientID == "PID-0042"
    assert ds.PatientBirthDate == "19800102" and ds.PatientSex == "F"
    assert ds.StudyInstanceUID == "1.2.826.0.1.3680043.8.498.1234"
    assert ds.FrameOfReferenceUID == "1.2.826.0.1.3680043.8.498.5678"
    assert (ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber) == ("20240305", "091530", "S77", "ACC9")
    assert int(ds.SeriesNumber) == 7 and "t1_flash" in ds.SeriesDescription
    assert float(ds.RepetitionTime) == 250.0 and float(ds.EchoTime) == 2.5 and ds.ScanningSequence == "GR"
    assert ds.PatientPosition == "HFS"


def test_3d_volume_gives_one_file_per_partition(tmp_path):
    header, samples = simulated(tmp_path, "cartesian3d", slices=1, matrix=16, partitions=8)
    [result] = classical_results(samples)
    assert result.image.shape == (8, 16, 16)
    paths = write_dicom_series([result], header, tmp_path / "dicom")
    files = [pydicom.dcmread(p) for p in paths]
    assert len(files) == 8 and all(ds.MRAcquisitionType == "3D" for ds in files)
    fov = result.sample.geometry.field_of_view
    positions = np.array([np.asarray(ds.ImagePositionPatient, dtype=float) for ds in files])
    np.testing.assert_allclose(np.diff(positions, axis=0), [[0, 0, fov[2] / 8]] * 7, atol=1e-6)
    assert float(files[0].SliceThickness) == pytest.approx(fov[2] / 8)
    for z, ds in enumerate(files):
        np.testing.assert_allclose(_stored_to_data(ds), result.image[z],
                                   atol=float(ds.RealWorldValueMappingSequence[0].RealWorldValueSlope))


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian dicom3tools) not installed")
def test_dciodvfy_reports_no_errors(tmp_path, cartesian):
    header, samples = cartesian
    results = oblique_slices(samples[0], count=1) + classical_results(samples)
    paths = write_dicom_series(results, header_with_patient(header), tmp_path / "a")
    paths += write_dicom_series(classical_results(samples[:1]), header, tmp_path / "b")
    paths += write_dicom_series(classical_results(samples[:1]), None, tmp_path / "no-header")
    for path in paths:
        report = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, check=False)
        output = report.stdout + report.stderr
        assert "MRImage" in output
        errors = [line for line in output.splitlines() if line.startswith("Error")]
        assert not errors, f"{path.name}: {errors}"


def test_empty_results_are_refused(tmp_path, cartesian):
    with pytest.raises(ValueError, match="no images"):
        write_dicom_series([], cartesian[0], tmp_path)
