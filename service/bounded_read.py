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

import contextlib
import functools
import multiprocessing
import os
import pickle
import resource
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from mrdserve.models.data.input_errors import InputError, LimitError
from mrdserve.models.data.sample import KSpaceSample
from mrdserve.service.admission import Budget, admit_file, check_samples

PRELOAD = ["mrdserve.service.reader_warmup"]  # imports the readers and warms their caches once
ADDRESS_SPACE_MARGIN = 512 * 1024**2  # what reading allocates besides the k-space the budget counts
READ_SECONDS_FLOOR = 10.0  # every read gets this long, plus the file's size at READ_BYTES_PER_S ...
READ_BYTES_PER_S = 20 * 1024**2  # ... (a loop in a corrupt file is stopped long before max_parse_s)
@functools.cache
def _forkserver() -> Any:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


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


def _cap_address_space(budget: Budget) -> None:
    """Cap the child's address space at what it has plus the budget (never above an existing hard limit)."""
    limit = _address_space_bytes() + budget.max_request_bytes + ADDRESS_SPACE_MARGIN
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    with contextlib.suppress(ValueError, OSError):  # a container that forbids it: the time limit still holds
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _is_allocation_failure(error: BaseException) -> bool:
    text = str(error).lower()
    return isinstance(error, MemoryError) or "allocate" in text or "out of memory" in text


def _child(sink: Connection, path: str, group: str, budget: Budget, trajectory_units: str | None) -> None:
    """Admit, read and check the file; send ("header", header), then ("sample", s) for each (one at a time, so
    the pickled copy is never the whole request), then ("done", None); or one ("input"|"bug", ...) message."""
    _cap_address_space(budget)
    try:
        from mrdserve.models.data.ismrmrd_io import read_ismrmrd

        declaration = admit_file(path, group, budget)
        header, samples = read_ismrmrd(path, dataset=group, header=declaration.header,
                                       trajectory_units=trajectory_units)
        check_samples(samples)
        _send(sink, ("header", header))
        while samples:
            _send(sink, ("sample", samples.pop(0)))
        _send(sink, ("done", None))
    except (MemoryError, RuntimeError) as error:
        if _is_allocation_failure(error):  # the address-space cap: torch raises RuntimeError, numpy MemoryError
            _send(sink, ("input", ("limit", "beyond_limit", f"reading the file needed more memory than the request "
                                                          f"budget of {budget.max_request_bytes} bytes "
                                                          f"(MRDSERVE_MAX_REQUEST_BYTES)")))
        else:
            _send(sink, ("bug", f"{type(error).__name__}: {str(error)[:300]}"))
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
    timeout_s = min(budget.max_parse_s, READ_SECONDS_FLOOR + path.stat().st_size / READ_BYTES_PER_S)
    context = _forkserver()
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(sender, str(path), group, budget, trajectory_units), daemon=True)
    child.start()
    sender.close()
    deadline = time.monotonic() + timeout_s
    header, samples = None, []
    try:
        while True:
            if not receiver.poll(max(0.0, deadline - time.monotonic())):
                raise InputError(f"reading the file did not finish within {timeout_s:.0f} s (a corrupt HDF5 "
                                 f"structure can make the reader loop); it was stopped (MRDSERVE_MAX_PARSE_S)",
                                 "unreadable_hdf5")
            try:
                kind, payload = pickle.loads(receiver.recv_bytes())
            except (EOFError, OSError, pickle.UnpicklingError):
                raise InputError("the HDF5 reader stopped on this file (corrupt or truncated); nothing was "
                                 "reconstructed", "unreadable_hdf5") from None
            if kind == "header":
                header = payload
            elif kind == "sample":
                samples.append(payload)
            elif kind == "done":
                return header, samples
            elif kind == "input":
                category, code, message = payload
                raise (LimitError if category == "limit" else InputError)(message, code)
            else:
                raise RuntimeError(f"reading the file failed: {payload}")
    finally:
        receiver.close()
        if child.is_alive():
            child.kill()
        child.join(5)
