"""ISMRMRD image output: header fields from the acquisitions and the header, meta attributes, row-major data,
and a round trip through ``ismrmrd.Dataset``."""

import ismrmrd
import numpy as np
import pytest

from mrdserve.models.data.ismrmrd_header import parse_header
from mrdserve.service.outputs.ismrmrd_images import to_ismrmrd_images, write_ismrmrd_images
from tests.service.output_samples import OBLIQUE, classical_results, oblique_slices, simulated


@pytest.fixture(scope="module")
def cartesian(tmp_path_factory):
    return simulated(tmp_path_factory.mktemp("cartesian"))


def test_images_carry_geometry_indices_and_meta(cartesian):
    header, samples = cartesian
    results = oblique_slices(samples[0])
    images = to_ismrmrd_images(results, header, series_index=3)
    for number, (image, result) in enumerate(zip(images, results, strict=True), start=1):
        assert image.image_type == ismrmrd.IMTYPE_MAGNITUDE
        assert (image.image_series_index, image.image_index) == (3, number)
        assert image.slice == result.sample.index.slice
        assert tuple(image.matrix_size) == (24, 20, 1)  # (x, y, z)
        assert image.data.dtype == np.float32 and image.data.shape == (1, 1, 20, 24)
        np.testing.assert_array_equal(image.data[0, 0], result.image)  # row-major: data[.., y, x]
        np.testing.assert_allclose(image.read_dir, OBLIQUE[:, 0], atol=1e-6)
        np.testing.assert_allclose(image.phase_dir, OBLIQUE[:, 1], atol=1e-6)
        np.testing.assert_allclose(image.slice_dir, OBLIQUE[:, 2], atol=1e-6)
        np.testing.assert_allclose(image.position, result.sample.geometry.position, atol=1e-4)
        np.testing.assert_allclose(image.field_of_view, (240.0, 180.0, 5.0))
        assert tuple(image.patient_table_position) == (0.0, 0.0, -1200.0)
        meta = image.meta
        assert meta["DataRole"] == "Image" and meta["Keep_image_geometry"] == "1"
        assert meta["ImageComments"] == "demo-test 1.2.0"
        assert meta["SequenceDescriptionAdditional"] == "mrdserve_demo-test"
        assert float(meta["WindowWidth"]) > 0 and float(meta["WindowCenter"]) > 0


def test_field_of_view_and_stamps_come_from_header_and_acquisitions(cartesian):
    header, samples = cartesian
    results = classical_results(samples)
    images = to_ismrmrd_images(results, header)
    recon = header.encoding[0].reconSpace.fieldOfView_mm
    head = samples[1].reference_head
    assert tuple(images[1].field_of_view) == pytest.approx((recon.x, recon.y, recon.z))
    assert images[1].measurement_uid == head.measurement_uid
    assert images[1].acquisition_time_stamp == head.acquisition_time_stamp
    assert [image.slice for image in images] == [0, 1]
    assert images[0].meta["ImageComments"] == "classical rss (fallback: no artifact fits this data)"


def test_round_trip_through_an_ismrmrd_dataset(tmp_path, cartesian):
    header, samples = cartesian
    results = classical_results(samples)
    for dtype, tolerance in (("float32", 0.0), ("uint16", None)):
        path = write_ismrmrd_images(results, header, tmp_path / f"{dtype}.h5", dtype=dtype)
        with ismrmrd.Dataset(str(path), "dataset", create_if_needed=False) as dataset:
            assert parse_header(dataset.read_xml_header()).encoding[0].reconSpace.matrixSize.x == 32
            assert dataset.number_of_images("image_1") == 2
            peaks = []
            for number, result in enumerate(results):
                image = dataset.read_image("image_1", number)
                assert image.data.dtype == np.dtype(dtype)
                assert (image.slice, image.image_index, image.image_type) == (number, number + 1, 1)
                assert image.meta["DataRole"] == "Image" and image.meta["Keep_image_geometry"] == "1"
                assert image.meta["ImageComments"].startswith("classical rss")
                values = image.data[0, 0].astype(np.float64)
                if dtype == "uint16":
                    slope = float(image.meta["RealWorldValueSlope"])
                    np.testing.assert_allclose(values * slope, result.image, atol=slope, rtol=1e-6)
                    peaks.append(values.max())
                else:
                    np.testing.assert_allclose(values, result.image, atol=tolerance)
            if dtype == "uint16":
                assert max(peaks) == 65535  # one series-wide slope: the brightest image fills the range


def test_3d_volume_is_one_image_and_bad_dtype_is_refused(tmp_path):
    header, samples = simulated(tmp_path, "cartesian3d", slices=1, matrix=16, partitions=8)
    [image] = to_ismrmrd_images(classical_results(samples), header)
    assert tuple(image.matrix_size) == (16, 16, 8) and image.data.shape == (1, 8, 16, 16)
    with pytest.raises(ValueError, match="dtype"):
        to_ismrmrd_images(classical_results(samples), header, dtype="int16")
