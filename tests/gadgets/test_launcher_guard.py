"""The guard of Gadgetron's ``python -m gadgetron`` launcher (``gadgets.launcher_guard``), without a Gadgetron: a
peer that accepts the launcher's connection and closes it before the handshake ends it in seconds, with a reason,
where the unguarded launcher spins forever; other programs are untouched."""

from __future__ import annotations

import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

from mrdserve.gadgets.launcher_guard import PTH_LINE, PTH_NAME, write_guard

ROOT = Path(__file__).resolve().parents[2]


def _launcher_against_a_closing_peer(timeout_s: float = 60.0) -> tuple[int | None, str]:
    """Run the launcher against a socket that accepts and closes at once: (exit code, None if it did not exit
    within ``timeout_s``, and stderr)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        process = subprocess.Popen([sys.executable, "-m", "gadgetron", str(port), "mrdserve.gadgets.reconstruct",
                                    "reconstruct"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        server.settimeout(timeout_s)
        peer, _ = server.accept()
        peer.close()  # Gadgetron ending the connection during the handshake
        try:
            _, stderr = process.communicate(timeout=timeout_s)
            return process.returncode, stderr.decode(errors="replace")
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            return None, ""


def test_this_environment_has_the_guard():
    path = Path(sysconfig.get_paths()["purelib"]) / PTH_NAME
    assert path.is_file(), "run: .venv/bin/python -m mrdserve.gadgets install-guard (make does it)"
    assert path.read_text() == PTH_LINE


def test_the_guarded_launcher_exits_when_gadgetron_closes_during_the_handshake():
    code, stderr = _launcher_against_a_closing_peer()
    assert code is not None and code != 0, "the launcher kept running after its peer closed"
    assert "Gadgetron closed the connection after 0 of" in stderr


def test_install_and_remove_in_another_site_packages(tmp_path):
    written = write_guard(tmp_path)
    assert written == tmp_path / PTH_NAME and written.read_text() == PTH_LINE
    assert write_guard(tmp_path, remove=True) == written and not written.exists()
    assert not write_guard(tmp_path, remove=True).exists()  # removing twice is fine


def test_the_guard_line_does_nothing_in_other_programs():
    """The .pth line runs at every start-up of this environment: elsewhere it only compares argv."""
    check = ("import sys; print(any(type(f).__name__ == '_PatchOnImport' for f in sys.meta_path), "
             "'gadgetron.external.connection' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["False", "False"]
