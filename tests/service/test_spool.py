import json
import os

import pytest

from mrdserve.service.spool import FAILED, MAX_ATTEMPTS, QUEUED, RUNNING, SUCCEEDED, JobSpool, SpoolFullError


def _upload(spool: JobSpool, payload: bytes = b"\x89HDF data") -> object:
    path = spool.incoming_path()
    path.write_bytes(payload)
    return path


def test_job_lifecycle_keeps_result_until_it_expires(tmp_path):
    spool = JobSpool(tmp_path, max_bytes=10_000, ttl_s=60)
    job = spool.create(_upload(spool), {"format": "dicom"})
    assert job.state == QUEUED and spool.input_path(job).read_bytes() == b"\x89HDF data"
    assert spool.get(job.id).params == {"format": "dicom"}
    spool.mark_running(job)
    result = tmp_path / "out.zip"
    result.write_bytes(b"zip")
    spool.mark_succeeded(job, result, "application/zip", "images.zip", slices=2)
    stored = spool.get(job.id)
    assert stored.state == SUCCEEDED and stored.slices == 2 and stored.attempts == 1
    assert spool.result_path(stored).read_bytes() == b"zip"
    assert not spool.input_path(stored).exists()  # the input is freed once the result exists
    assert "result_file" not in stored.public()  # no file-system details for clients
    spool.mark_fetched(stored)
    assert spool.get(job.id).fetched and spool.result_path(stored).exists()  # a retried download still works
    assert spool.expire(now=stored.finished + 30) == 0
    assert spool.expire(now=stored.finished + 61) == 1 and spool.get(job.id) is None


def test_one_process_owns_a_spool(tmp_path):
    import subprocess
    import sys

    owner = JobSpool(tmp_path, max_bytes=10_000, ttl_s=60)
    owner.acquire()
    script = ("import sys; from pathlib import Path; from mrdserve.service.spool import JobSpool, SpoolInUseError\n"
              "try:\n    JobSpool(Path(sys.argv[1]), 10, 1).acquire()\nexcept SpoolInUseError as e:\n"
              "    print(e); sys.exit(3)\n")
    other = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True)
    assert other.returncode == 3 and "in use by another mrdserve process" in other.stdout
    assert str(os.getpid()) in other.stdout and "--spool-dir" in other.stdout
    owner.release()
    assert subprocess.run([sys.executable, "-c", script, str(tmp_path)]).returncode == 0


def test_recover_requeues_interrupted_jobs_and_fails_lost_ones(tmp_path):
    spool = JobSpool(tmp_path, max_bytes=10_000, ttl_s=60)
    queued = spool.create(_upload(spool), {})
    running = spool.mark_running(spool.create(_upload(spool), {}))
    lost = spool.mark_running(spool.create(_upload(spool), {}))
    spool.input_path(lost).unlink()
    stale_upload = _upload(spool)
    restarted = JobSpool(tmp_path, max_bytes=10_000, ttl_s=60)  # a new process on the same directory
    recovered = {job.id for job in restarted.recover()}
    assert recovered == {queued.id, running.id}
    assert restarted.get(running.id).state == QUEUED
    failed = restarted.get(lost.id)
    assert failed.state == FAILED and "lost" in failed.error
    assert not stale_upload.exists()


def test_a_job_that_keeps_killing_the_process_is_failed_not_retried(tmp_path):
    spool = JobSpool(tmp_path, max_bytes=10_000, ttl_s=60)
    job = spool.create(_upload(spool), {})
    for _ in range(MAX_ATTEMPTS):
        assert [j.id for j in spool.recover()] == [job.id]
        spool.mark_running(spool.get(job.id))
    assert spool.recover() == []
    stored = spool.get(job.id)
    assert stored.state == FAILED and "interrupted" in stored.error


def test_size_bound_and_expiry(tmp_path):
    spool = JobSpool(tmp_path, max_bytes=2000, ttl_s=10)
    job = spool.create(_upload(spool, b"x" * 1000), {})  # plus its status.json
    with pytest.raises(SpoolFullError, match="spool is full"):
        spool.require_room(1000)
    assert 0 < spool.room() < 1000
    spool.mark_failed(job, "bad input", 422)
    assert spool.get(job.id).state == FAILED and spool.get(job.id).error_status == 422
    assert spool.expire(now=spool.get(job.id).updated + 5) == 0
    assert spool.expire(now=spool.get(job.id).updated + 11) == 1
    assert spool.get(job.id) is None


def test_malformed_ids_and_corrupt_status_are_unknown(tmp_path):
    spool = JobSpool(tmp_path, max_bytes=1000, ttl_s=10)
    assert spool.get("../../etc/passwd") is None
    job = spool.create(_upload(spool), {})
    (spool.jobs_dir / job.id / "status.json").write_text("{not json")
    assert spool.get(job.id) is None
    assert json.loads(json.dumps(spool.mark_running(spool.create(_upload(spool), {})).public()))["state"] == RUNNING


def test_a_job_requeued_by_a_clean_shutdown_does_not_count_the_attempt(tmp_path):
    spool = JobSpool(tmp_path, max_bytes=10_000, ttl_s=60)
    job = spool.mark_running(spool.create(_upload(spool), {}))
    assert job.attempts == 1
    spool.requeue(job)
    stored = spool.get(job.id)
    assert stored.state == QUEUED and stored.attempts == 0 and spool.input_path(stored).is_file()


def test_a_succeeded_job_records_its_pacs_push(tmp_path):
    spool = JobSpool(tmp_path, max_bytes=10_000, ttl_s=60)
    job = spool.mark_running(spool.create(_upload(spool), {}))
    result = tmp_path / "out.zip"
    result.write_bytes(b"zip")
    spool.mark_succeeded(job, result, "application/zip", "images.zip", slices=1, pacs={"outcome": "ok"})
    assert spool.get(job.id).public()["pacs"] == {"outcome": "ok"}
