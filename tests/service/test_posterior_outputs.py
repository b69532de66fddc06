"""Posterior images (uncertainty maps) in every output: a series of their own, saying what they are."""

from __future__ import annotations

import zipfile

import h5py
import ismrmrd
import numpy as np
import pydicom
import pytest

from mrdserve.service.engine.result import ImageRole, with_derived
from mrdserve.service.outputs.formats import write_outputs
from mrdserve.service.outputs.package import package_results
from tests.service.output_samples import classical_results, simulated

NOTE = "4 of 4 posterior samples from score prior demo-score-0.1; research use, not for diagnosis"


@pytest.fixture
def with_maps(tmp_path):
    header, samples = simulated(tmp_path)
    results = classical_results(samples)
    for result in results:
        std = np.full_like(result.image, 0.01)  # a flat, small map: its own window, not the image's
        result.derived = [result.posterior(ImageRole.posterior_mean, result.image * 0.9, NOTE),
                          result.posterior(ImageRole.posterior_std, std, NOTE)]
    return header, results


def test_with_derived_lists_the_images_then_each_role_in_series_order(with_maps):
    _, results = with_maps
    roles = [r.role for r in with_derived(results)]
    assert roles == [ImageRole.reconstruction] * 2 + [ImageRole.posterior_mean] * 2 + [ImageRole.posterior_std] * 2
    assert [role.series_offset for role in ImageRole] == [0, 1, 2]


def test_dicom_writes_one_series_per_role_with_its_number_and_description(with_maps, tmp_path):
    header, results = with_maps
    paths = write_outputs(results, header, "dicom", tmp_path / "out")
    datasets = [pydicom.dcmread(p) for p in paths]
    assert len(datasets) == 6
    series = {}
    for ds in datasets:
        series.setdefault(ds.SeriesInstanceUID, []).append(ds)
    assert len(series) == 3
    by_number = {int(group[0].SeriesNumber): group for group in series.values()}
    base = min(by_number)
    assert sorted(by_number) == [base, base + 1, base + 2]
    assert "posterior mean" in by_number[base + 1][0].SeriesDescription
    assert "uncertainty map" in by_number[base + 2][0].SeriesDescription
    assert "posterior" not in by_number[base][0].SeriesDescription
    assert by_number[base + 2][0].ImageType[1] == "SECONDARY"
    assert NOTE in by_number[base + 2][0].ImageComments
    std_slope = float(by_number[base + 2][0].RealWorldValueMappingSequence[0].RealWorldValueSlope)
    image_slope = float(by_number[base][0].RealWorldValueMappingSequence[0].RealWorldValueSlope)
    assert std_slope == pytest.approx(0.01 / 65535, rel=1e-6) and image_slope > 10 * std_slope
    assert {p.parent.name for p in paths} == {"out", "posterior-mean", "posterior-std"}
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1  # one study, one frame: a viewer overlays the map
    assert len({ds.FrameOfReferenceUID for ds in datasets}) == 1


def test_ismrmrd_file_has_a_group_and_data_role_per_series(with_maps, tmp_path):
    header, results = with_maps
    [path] = write_outputs(results, header, "ismrmrd", tmp_path / "out")
    with h5py.File(path) as f:
        assert {"image_1", "image_2", "image_3"} <= set(f["dataset"])
    dataset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=False)
    try:
        for group, role in (("image_1", "Image"), ("image_2", "PosteriorMean"), ("image_3", "PosteriorStd")):
            image = dataset.read_image(group, 0)
            meta = ismrmrd.Meta.deserialize(image.attribute_string)
            assert meta["DataRole"] == role
            assert image.image_series_index == int(group[-1])
            assert image.image_index == 1
        std = dataset.read_image("image_3", 1)
        np.testing.assert_allclose(std.data, 0.01, rtol=1e-6)
        assert NOTE in ismrmrd.Meta.deserialize(std.attribute_string)["ImageComments"]
    finally:
        dataset.close()


def test_nifti_packages_one_volume_per_role_in_a_zip(with_maps, tmp_path):
    header, results = with_maps
    packaged = package_results(results, header, "nifti", tmp_path / "work")
    assert packaged.media_type == "application/zip"
    with zipfile.ZipFile(packaged.path) as archive:
        assert sorted(archive.namelist()) == ["images-posterior-mean.nii.gz", "images-posterior-std.nii.gz",
                                              "images.nii.gz"]


def test_png_names_say_the_role_and_results_without_maps_are_unchanged(with_maps, tmp_path):
    header, results = with_maps
    names = sorted(p.name for p in write_outputs(results, header, "png", tmp_path / "png"))
    assert sum("posterior-std" in n for n in names) == 2 and sum("posterior-mean" in n for n in names) == 2
    (tmp_path / "plain").mkdir()
    plain = classical_results(simulated(tmp_path / "plain")[1])
    packaged = package_results(plain, header, "nifti", tmp_path / "plain-work")
    assert packaged.filename == "images.nii.gz" and packaged.media_type == "application/gzip"
