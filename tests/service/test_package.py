"""Packaging results per requested format (zips for DICOM and PNG) and `mrdserve recon --format ...` writing
files that load."""

import io
import zipfile

import ismrmrd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from mrdserve.models.data.simulate import simulate_to_file
from mrdserve.service.cli import main
from mrdserve.service.outputs.package import package_results
from tests.service.output_samples import classical_results, simulated


@pytest.fixture(scope="module")
def cartesian(tmp_path_factory):
    return simulated(tmp_path_factory.mktemp("cartesian"))


def test_dicom_and_png_come_zipped(tmp_path, cartesian):
    header, samples = cartesian
    results = classical_results(samples)
    dicom = package_results(results, header, "dicom", tmp_path / "d")
    assert (dicom.media_type, dicom.filename) == ("application/zip", "images-dicom.zip")
    with zipfile.ZipFile(dicom.path) as archive:
        names = sorted(archive.namelist())
        assert names == ["IM00001.dcm", "IM00002.dcm"]
        files = [pydicom.dcmread(io.BytesIO(archive.read(name))) for name in names]
    assert [ds.pixel_array.shape for ds in files] == [(32, 32), (32, 32)]
    png = package_results(results, header, "png", tmp_path / "p")
    assert png.filename == "images-png.zip"
    with zipfile.ZipFile(png.path) as archive:
        names = sorted(archive.namelist())
        assert names == ["slice000_contrast00_rep00_set00_rss.png", "slice001_contrast00_rep00_set00_rss.png"]
        assert np.asarray(Image.open(io.BytesIO(archive.read(names[0])))).shape == (32, 32)


def test_nifti_and_ismrmrd_are_single_files(tmp_path, cartesian):
    header, samples = cartesian
    results = classical_results(samples)
    nifti = package_results(results, header, "nifti", tmp_path / "n")
    assert nifti.filename == "images.nii.gz" and nib.load(nifti.path).shape == (32, 32, 2)
    images = package_results(results, header, "ismrmrd", tmp_path / "i")
    assert (images.media_type, images.filename) == ("application/x-hdf5", "images.h5")
    with ismrmrd.Dataset(str(images.path), "dataset", create_if_needed=False) as dataset:
        assert dataset.number_of_images("image_1") == 2
    with pytest.raises(ValueError, match="format must be one of"):
        package_results(results, header, "jpeg", tmp_path / "j")


@pytest.mark.parametrize("fmt", ["dicom", "nifti", "ismrmrd", "png"])
def test_recon_cli_writes_each_format(tmp_path, fmt):
    path = tmp_path / "radial.h5"
    simulate_to_file(path, trajectory="radial", coils=2, acceleration=1, matrix=32, slices=2, seed=4)
    out = tmp_path / "out"
    assert main(["recon", str(path), "-o", str(out), "--format", fmt, "--artifact", "classical"]) == 0
    if fmt == "dicom":
        files = [pydicom.dcmread(p) for p in sorted(out.glob("*.dcm"))]
        assert len(files) == 2 and files[0].pixel_array.shape == (32, 32)
        assert "(fallback: classical reconstruction requested)" in files[0].ImageComments
    elif fmt == "nifti":
        assert nib.load(out / "images.nii.gz").shape == (32, 32, 2)
    elif fmt == "ismrmrd":
        with ismrmrd.Dataset(str(out / "images.h5"), "dataset", create_if_needed=False) as dataset:
            image = dataset.read_image("image_1", 1)
        assert image.slice == 1 and image.meta["ImageComments"].startswith("classical")
    else:
        assert len(list(out.glob("*.png"))) == 2


def test_recon_cli_dicom_names_the_artifact(tmp_path):
    path = tmp_path / "radial.h5"
    simulate_to_file(path, trajectory="radial", coils=8, acceleration=4, matrix=96, seed=5)
    assert main(["recon", str(path), "-o", str(tmp_path / "out"), "--format", "dicom"]) == 0
    [file] = (tmp_path / "out").glob("*.dcm")
    ds = pydicom.dcmread(file)
    assert "ncpdnet-radial" in ds.ImageComments and "fallback" not in ds.ImageComments
    assert ds.pixel_array.shape == (96, 96) and ds.pixel_array.max() == 65535
