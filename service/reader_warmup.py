"""Imported once by the forkserver of ``service.bounded_read``: reads a tiny synthetic ISMRMRD file, so that every
reader forked from it starts with warm caches (the XML binding's parser tables, the HDF5 library handle, torch's
FFT) instead of paying about 100 ms for them on every upload."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import torch

from mrdserve.models.data.ismrmrd_write import write_ismrmrd_cartesian
from mrdserve.service.admission import Budget, admit_file, check_samples


def warm_up() -> None:
    """Admit, read and check a 16x16, 2-coil file with a noise scan and readout oversampling.

    torch runs single-threaded here and in every reader: a forked child must not inherit a started OpenMP pool
    (it would deadlock on it), and reading is not where the cores are needed.
    """
    torch.set_num_threads(1)
    with contextlib.suppress(Exception):  # a cold cache is slower, not wrong: the forkserver must start anyway
        _read_synthetic_file()


def _read_synthetic_file() -> None:
    from mrdserve.models.data.ismrmrd_io import read_ismrmrd

    with tempfile.TemporaryDirectory(prefix="mrdserve-warmup-") as directory:
        path = Path(directory) / "warmup.h5"
        kspace = torch.ones(1, 2, 16, 32, dtype=torch.complex64)
        write_ismrmrd_cartesian(path, kspace, readout_oversampling=2, kspace_is_oversampled=True,
                                noise=torch.ones(2, 64, dtype=torch.complex64))
        declaration = admit_file(path, "dataset", Budget())
        check_samples(read_ismrmrd(path, header=declaration.header)[1])


warm_up()
