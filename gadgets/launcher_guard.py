"""A guard for Gadgetron's Python launcher (``python -m gadgetron``, package ``gadgetron`` 1.4.1).

Gadgetron's ``<execute>`` node starts ``python -m gadgetron PORT MODULE TARGET``; the launcher reads CONFIG and
HEADER before it imports our module. When Gadgetron ends that connection during the handshake (a client's
noise-dependency query, a client that goes away), the launcher's socket reader loops on ``recv() == b''`` at 100%
CPU forever and Gadgetron waits for it: the client hangs. No code of ours runs before that loop, so the guard is a
one-line ``.pth`` file in the environment's site-packages that, only in a process started as
``python -m gadgetron``, patches the reader on import to end the launcher with a ``ConnectionError`` at end of
stream. ``python -m mrdserve.gadgets install-guard`` writes it (``make`` does, for ``.venv``); ``--remove``
deletes it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import socket
import sys
import sysconfig
from pathlib import Path
from types import ModuleType
from typing import Any

PTH_NAME = "mrdserve-gadgetron-launcher-guard.pth"
# .pth lines that start with "import" run at interpreter start-up: this one costs a list comparison elsewhere.
PTH_LINE = ('import sys; exec("from mrdserve.gadgets.launcher_guard import install; install()") '
            'if sys.orig_argv[1:3] == ["-m", "gadgetron"] else None\n')
GUARDED_MODULE = "gadgetron.external.connection"


def guarded_read(self: Any, nbytes: int) -> bytes:
    """The launcher's ``SocketWrapper.read``, ending at end of stream instead of looping on empty reads."""
    data = b""
    while len(data) < nbytes:
        chunk = self.socket.recv(nbytes - len(data), socket.MSG_WAITALL)
        if not chunk:
            raise ConnectionError(f"Gadgetron closed the connection after {len(data)} of {nbytes} bytes "
                                  f"(during the external gadget's handshake)")
        data += chunk
    return data


def patch(module: ModuleType) -> bool:
    """Replace the socket reader of ``gadgetron.external.connection``; False when the module has none."""
    wrapper = getattr(getattr(module, "Connection", None), "SocketWrapper", None)
    if wrapper is None or not hasattr(wrapper, "read"):
        return False
    wrapper.read = guarded_read
    return True


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds ``gadgetron.external.connection`` as usual and patches it right after it is executed."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != GUARDED_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        loader, execute = spec.loader, spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            execute(module)
            patch(module)

        loader.exec_module = exec_module  # type: ignore[method-assign]  # this module's own loader object
        return spec


def install() -> None:
    """Patch the launcher's reader when it is imported (or now, if it already was); idempotent."""
    if GUARDED_MODULE in sys.modules:
        patch(sys.modules[GUARDED_MODULE])
    elif not any(isinstance(finder, _PatchOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())


def pth_path(site_packages: Path | None = None) -> Path:
    """Where the guard's ``.pth`` goes: this environment's site-packages unless told otherwise."""
    return Path(site_packages or sysconfig.get_paths()["purelib"]) / PTH_NAME


def write_guard(site_packages: Path | None = None, remove: bool = False) -> Path:
    """Write (or with ``remove`` delete) the guard's ``.pth``; the path it concerns."""
    path = pth_path(site_packages)
    if remove:
        path.unlink(missing_ok=True)
    else:
        path.write_text(PTH_LINE)
    return path
