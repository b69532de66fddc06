"""Read an uploaded file in a child process bounded in time and memory, so no file can hang, crash or bloat
the server.

A corrupt HDF5 file can send the HDF5 library into a loop that never returns (found by fuzzing), or crash it;
and the heaps a large parse leaves behind are not always given back. So ``read_bounded`` runs admission
(``service.admission.admit_file``), the read and the finite-value check in a child forked from a forkserver
that has already imported the readers: the child's address space is capped at the request budget on top of what
it starts with, it is killed after ``timeout_s``, and all its memory goes with it. The samples come back pickled.
A child that dies or overruns becomes an ``InputError`` naming what happened, never a server failure.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import resource
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from models.data.input_errors import InputError, LimitError
from models.data.sample import KSpaceSample
from service.admission import Budget, admit_file, check_samples

PRELOAD = ["service.reader_warmup"]  # imports the readers and warms their caches once
ADDRESS_SPACE_MARGIN = 512 * 1024**2  # what reading allocates besides the k-space the budget counts
_context: list[Any] = []


def _forkserver() -> Any:
    if not _context:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        _context.append(context)
    return _context[0]


def start() -> None:
    """Start the forkserver now (it imports torch once, about a second) instead of at the first request."""
    from multiprocessing import forkserver

    _forkserver()
    forkserver.ensure_running()


def _address_space_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _send(sink: Connection, message: tuple[str, Any]) -> None:
    """Plain pickle: multiprocessing's own pickler would share tensors through files that die with the child."""
    sink.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def _child(sink: Connection, path: str, group: str, budget: Budget, trajectory_units: str | None) -> None:
    """Admit, read and check the file; send ("ok", (header, samples)) or ("input", (kind, code, message))."""
    try:
        limit = _address_space_bytes() + budget.max_request_bytes + ADDRESS_SPACE_MARGIN
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        from models.data.ismrmrd_io import read_ismrmrd

        declaration = admit_file(path, group, budget)
        header, samples = read_ismrmrd(path, dataset=group, header=declaration.header,
                                       trajectory_units=trajectory_units)
        check_samples(samples)
        _send(sink, ("ok", (header, samples)))
    except MemoryError:
        _send(sink, ("input", ("limit", "beyond_limit", f"reading the file needed more memory than the request budget "
                                                      f"of {budget.max_request_bytes} bytes "
                                                      f"(MRDSERVE_MAX_REQUEST_BYTES)")))
    except InputError as error:
        _send(sink, ("input", ("limit" if isinstance(error, LimitError) else "input", error.code, str(error))))
    except ValueError as error:  # the assembler's consistency checks
        _send(sink, ("input", ("input", "inconsistent_data", str(error))))
    except Exception as error:  # a bug of ours: reported as such by the parent
        _send(sink, ("bug", f"{type(error).__name__}: {str(error)[:300]}"))
    finally:
        sink.close()


def read_bounded(path: Path, group: str, budget: Budget,
                 trajectory_units: str | None = None) -> tuple[Any, list[KSpaceSample]]:
    """The header and samples of an ISMRMRD file, read in a bounded child process (see the module docstring).

    Raises ``InputError`` / ``LimitError`` for the file's problems (also: a read that overran
    ``budget.max_parse_s`` or crashed the reader) and RuntimeError for a bug of ours.
    """
    timeout_s = budget.max_parse_s
    context = _forkserver()
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(sender, str(path), group, budget, trajectory_units), daemon=True)
    child.start()
    sender.close()
    try:
        if not receiver.poll(timeout_s):
            raise InputError(f"reading the file did not finish within {timeout_s:g} s (a corrupt HDF5 structure "
                             f"can make the reader loop); it was stopped (MRDSERVE_MAX_PARSE_S)", "unreadable_hdf5")
        try:
            kind, payload = pickle.loads(receiver.recv_bytes())
        except (EOFError, OSError, pickle.UnpicklingError):
            raise InputError("the HDF5 reader stopped on this file (corrupt or truncated); nothing was "
                             "reconstructed", "unreadable_hdf5") from None
    finally:
        receiver.close()
        if child.is_alive():
            child.kill()
        child.join(5)
    if kind == "ok":
        return payload
    if kind == "input":
        category, code, message = payload
        raise (LimitError if category == "limit" else InputError)(message, code)
    raise RuntimeError(f"reading the file failed: {payload}")
