"""The spool of asynchronous jobs: input, status and result of each job on disk, so nothing accepted is lost.

Layout: ``<root>/jobs/<id>/status.json`` (written atomically), ``input.h5`` and ``result.<ext>``; uploads in
progress live under ``<root>/incoming/``. After a crash or restart, ``recover()`` returns every job that was
queued or running, ready to run again, or marks it failed with a reason when it cannot be (input lost, too many
interruptions). Results are kept until ``ttl_s`` after the job finished, fetched or not, so that a broken
download can be retried (with ``Range``); the spool refuses new work that would take it past ``max_bytes``.
One process owns a spool at a time (``acquire``: an exclusive lock on ``<root>/lock``), so two instances never
run each other's jobs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
PENDING_STATES = (QUEUED, RUNNING)
MAX_ATTEMPTS = 3  # a job interrupted this many times (e.g. it crashes the process) is failed, not retried
INPUT_NAME = "input.h5"


class SpoolFullError(RuntimeError):
    """The spool has no room for another job; the message says how full it is."""


class SpoolInUseError(RuntimeError):
    """Another process owns the spool directory."""


@dataclass
class Job:
    """The status of one asynchronous job, as stored in its ``status.json``."""

    id: str
    state: str
    created: float
    updated: float
    params: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    error: str | None = None
    error_status: int | None = None
    result_file: str | None = None
    media_type: str | None = None
    filename: str | None = None
    fetched: bool = False
    finished: float | None = None  # when it succeeded or failed: results expire ttl_s after this
    slices: int | None = None
    pacs: dict[str, Any] | None = None  # the PACS push of the result (service.pacs.PushReport.public), if any
    summary: dict[str, Any] | None = None  # what made the images and the stage times (result_summary)
    progress: dict[str, Any] | None = None  # {"stage": ..., "fraction": 0..1} while a long stage runs

    def public(self) -> dict[str, Any]:
        """What clients see: no file-system paths."""
        return {"id": self.id, "state": self.state, "created": self.created, "updated": self.updated,
                "params": self.params, "attempts": self.attempts, "error": self.error,
                "error_status": self.error_status, "filename": self.filename, "fetched": self.fetched,
                "slices": self.slices, "pacs": self.pacs, "summary": self.summary, "progress": self.progress}


def _valid_id(job_id: str) -> bool:
    return len(job_id) == 32 and all(c in "0123456789abcdef" for c in job_id)


class JobSpool:
    """Jobs under ``root`` with a size bound (bytes) and a result time-to-live (seconds)."""

    def __init__(self, root: Path, max_bytes: int, ttl_s: float) -> None:
        self.root = Path(root)
        self.max_bytes = int(max_bytes)
        self.ttl_s = float(ttl_s)
        self.jobs_dir = self.root / "jobs"
        self.incoming_dir = self.root / "incoming"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.incoming_dir.mkdir(parents=True, exist_ok=True)
        self._lock: int | None = None

    # ------------------------------------------------------------------------------------------ ownership
    def acquire(self) -> None:
        """Own the spool for this process; ``SpoolInUseError`` when another process does."""
        if self._lock is not None:
            return
        descriptor = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(descriptor, 32).decode(errors="replace").strip() or "unknown"
            os.close(descriptor)
            raise SpoolInUseError(f"the job spool {self.root} is in use by another mrdserve process (pid {owner}); "
                                  f"give each instance its own --spool-dir (MRDSERVE_SPOOL_DIR)") from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, str(os.getpid()).encode())
        self._lock = descriptor

    def release(self) -> None:
        """Give the spool up (the lock also ends with the process)."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    # ------------------------------------------------------------------------------------------ space
    def used_bytes(self) -> int:
        """Bytes held by the spool (jobs and uploads in progress)."""
        total = 0
        for directory, _, files in os.walk(self.root):
            for name in files:
                with contextlib.suppress(FileNotFoundError):  # removed while we walk
                    total += os.lstat(os.path.join(directory, name)).st_size
        return total

    def room(self) -> int:
        """Bytes that may still be added before the bound is reached."""
        return max(0, self.max_bytes - self.used_bytes())

    def require_room(self, n_bytes: int = 1) -> None:
        """Raise ``SpoolFullError`` unless ``n_bytes`` more fit under the bound."""
        used = self.used_bytes()
        if used + n_bytes > self.max_bytes:
            raise SpoolFullError(f"the job spool is full ({used} of {self.max_bytes} bytes used); fetch or wait "
                                 f"for finished results to expire, or retry later")

    # ------------------------------------------------------------------------------------------- jobs
    def incoming_path(self) -> Path:
        """A fresh path for an upload in progress (move it in with ``create``)."""
        return self.incoming_dir / f"{uuid.uuid4().hex}.part"

    def create(self, upload: Path, params: dict[str, Any]) -> Job:
        """Accept a job: move its uploaded input into the spool and record it as queued."""
        job_id = uuid.uuid4().hex
        directory = self.jobs_dir / job_id
        directory.mkdir()
        os.replace(upload, directory / INPUT_NAME)
        now = time.time()
        job = Job(id=job_id, state=QUEUED, created=now, updated=now, params=dict(params))
        self._write(job)
        return job

    def get(self, job_id: str) -> Job | None:
        """The job's status, or None when there is no such job (unknown, malformed id, or expired)."""
        if not _valid_id(job_id):
            return None
        try:
            data = json.loads((self.jobs_dir / job_id / "status.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return Job(**data)

    def input_path(self, job: Job) -> Path:
        return self.jobs_dir / job.id / INPUT_NAME

    def result_path(self, job: Job) -> Path | None:
        if job.result_file is None:
            return None
        return self.jobs_dir / job.id / job.result_file

    def mark_queued(self, job: Job) -> Job:
        job.state = QUEUED
        return self._write(job)

    def requeue(self, job: Job) -> Job:
        """A clean shutdown interrupted the running job: queued again to run after the restart, and the attempt
        is not counted (only interruptions that were not a clean stop count towards ``MAX_ATTEMPTS``)."""
        job.attempts = max(0, job.attempts - 1)
        return self.mark_queued(job)

    def mark_progress(self, job: Job, stage: str, fraction: float) -> Job:
        """How far a running job's long stage (e.g. posterior sampling) has come, for ``GET`` of its status."""
        job.progress = {"stage": stage, "fraction": round(min(max(float(fraction), 0.0), 1.0), 3)}
        return self._write(job)

    def mark_running(self, job: Job) -> Job:
        job.state, job.attempts, job.progress = RUNNING, job.attempts + 1, None
        return self._write(job)

    def mark_succeeded(self, job: Job, result: Path, media_type: str, filename: str, slices: int,
                       pacs: dict[str, Any] | None = None, summary: dict[str, Any] | None = None) -> Job:
        """Move the result into the job's directory, drop the input, and record success (and the result's PACS
        push, ``PushReport.public()``, when there was one, and its ``summary``)."""
        suffix = "".join(Path(filename).suffixes) or ".bin"
        target = self.jobs_dir / job.id / f"result{suffix}"
        shutil.move(str(result), target)
        self.input_path(job).unlink(missing_ok=True)
        job.state, job.result_file, job.media_type, job.filename, job.slices = (
            SUCCEEDED, target.name, media_type, filename, slices)
        job.finished = time.time()
        job.error = job.error_status = None
        job.pacs, job.summary = pacs, summary
        return self._write(job)

    def mark_failed(self, job: Job, reason: str, status: int = 500) -> Job:
        self.input_path(job).unlink(missing_ok=True)
        job.state, job.error, job.error_status = FAILED, reason, status
        job.finished = time.time()
        return self._write(job)

    def mark_fetched(self, job: Job) -> Job:
        """A download of the result completed; the result stays (a retry may need it) until it expires."""
        job.fetched = True
        return self._write(job)

    def recover(self) -> list[Job]:
        """Jobs left queued or running by a previous process: requeued to run again, or failed with a reason."""
        requeued = []
        for job in self.all_jobs():
            if job.state not in PENDING_STATES:
                continue
            if not self.input_path(job).is_file():
                self.mark_failed(job, "the job's input was lost when the service restarted", 500)
            elif job.attempts >= MAX_ATTEMPTS:
                self.mark_failed(job, f"the job was interrupted {job.attempts} times (the service stopped while "
                                      f"running it); it is not retried again", 500)
            else:
                requeued.append(self.mark_queued(job))
        for stale in self.incoming_dir.iterdir():  # uploads cut off by the restart were never accepted
            stale.unlink(missing_ok=True)
        return sorted(requeued, key=lambda j: j.created)

    def all_jobs(self) -> list[Job]:
        jobs = []
        for directory in self.jobs_dir.iterdir():
            job = self.get(directory.name)
            if job is not None:
                jobs.append(job)
        return jobs

    def expire(self, now: float | None = None) -> int:
        """Delete finished jobs older than the time-to-live; return how many were removed."""
        now = time.time() if now is None else now
        removed = 0
        for job in self.all_jobs():
            if job.state not in PENDING_STATES and now - (job.finished or job.updated) > self.ttl_s:
                shutil.rmtree(self.jobs_dir / job.id, ignore_errors=True)
                removed += 1
        return removed

    def _write(self, job: Job) -> Job:
        job.updated = time.time()
        path = self.jobs_dir / job.id / "status.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(job)))
        os.replace(temporary, path)
        return job
