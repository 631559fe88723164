"""Jobs: driver programs that the head runs on its machine for ``actorgrid submit``.

A job is a process started from the head (``argv``, in its own session so that stopping it
stops whatever it started there), in the unpacked ``working_dir`` package when one is given,
with ``ACTORGRID_ADDRESS`` and ``ACTORGRID_SECRET`` set (and ``ACTORGRID_TLS``, the head's
certificate files, on a TLS cluster) so that its ``ag.init()`` joins this cluster, and
``ACTORGRID_RUNTIME_ENV`` naming that folder so that its workers get the same code. Its end is
its exit status.

Its output (stdout and stderr, merged) goes to its log file, ``<log dir>/jobs/<job id>.log``
(``$ACTORGRID_LOG_DIR``, else ``actorgrid-logs`` in the temp folder: where the nodes' worker
logs go), written by the job itself, not through the head: a head that is killed and started
again (``rejoin.py``) still finds a job's output there, what it wrote before and after, for
``actorgrid jobs logs`` (its last ``JOB_LOG_BYTES``), also of jobs that ended before. The head
follows the file (a read every ``JOB_OUTPUT_POLL_S`` when nothing is new) to stream it to the
``submit`` that follows the job. The file of a job the head forgets (past ``JOBS_KEPT``) is
removed (with its rotated part); others stay with the logs folder.

A job's log is bounded: once the file that the head follows reaches ``job_log_max_bytes()``
(``$ACTORGRID_JOB_LOG_MAX_BYTES``, default ``JOB_LOG_MAX_BYTES``), the head reads it to its
end, copies the last that many bytes to ``<job id>.log.1`` (replacing the previous one) and
truncates it ("copytruncate": the job writes with O_APPEND, so its next line starts the file
again; only what it writes in the instant between that read and the truncation is lost). So
an ended job keeps less than twice that on disk (a running one: plus what it wrote since the
head last looked), and ``jobs logs`` reads its tail across both files. A job the head did not start (it rejoined a restarted head)
is not followed, hence not rotated.

Stopping a job (``actorgrid jobs stop``, a Ctrl-C at ``submit``, or the link of the
``submit`` that follows it closing) sends SIGTERM to its process group and SIGKILL after
``JOB_STOP_GRACE_S``. The tasks and actors it started are
owned by its driver, and end with its link (ownership); its folder is removed with the
head's session folder.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import secrets
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import trio

from .._env.packing import unpack
from .._env.spec import ENVIRON_VAR
from .._protocol.envmessages import (
    JobEnded,
    JobList,
    JobLogs,
    JobOutput,
    JobRejoin,
    JobStarted,
    JobSummary,
    QueryJobLogs,
    QueryJobs,
    StopJob,
    SubmitJob,
)
from .._protocol.messages import Ack
from .._runtime.peer import Peer
from .._transport.tls import TLSConfig
from .envhead import EnvHost, SessionFolder
from .spawn import SECRET_ENV_VARS

__all__ = [
    "JOB_LOG_BYTES",
    "JOB_LOG_MAX_BYTES",
    "JOB_STOP_GRACE_S",
    "TLS_ENV",
    "JobHost",
    "job_log_folder",
    "tls_from_environ",
]

log = logging.getLogger("actorgrid.head")

JOB_LOG_BYTES = 1 << 20  # output kept per job for `actorgrid jobs logs`
# A job's log file is rotated past this size (see the module docstring); the environment
# variable overrides it on the head's machine.
JOB_LOG_MAX_BYTES = 16 << 20
JOB_LOG_MAX_ENV = "ACTORGRID_JOB_LOG_MAX_BYTES"
JOB_STOP_GRACE_S = 5.0  # between SIGTERM and SIGKILL when a job is stopped
JOBS_KEPT = 200  # ended jobs remembered, oldest forgotten first
# How often the head reads a running job's log file again when it had nothing new: the delay
# of its output at the `submit` that follows it.
JOB_OUTPUT_POLL_S = 0.05
# The TLS files (TLSConfig.to_dict() as JSON) a driver joins with when none is given.
TLS_ENV = "ACTORGRID_TLS"


def job_log_folder() -> Path:
    """Where jobs' log files go: ``$ACTORGRID_LOG_DIR/jobs``, else in the temp folder."""
    root = os.environ.get("ACTORGRID_LOG_DIR") or os.path.join(
        tempfile.gettempdir(), "actorgrid-logs"
    )
    return Path(root) / "jobs"


def job_log_max_bytes() -> int:
    """The size past which a job's log file is rotated (``$ACTORGRID_JOB_LOG_MAX_BYTES``)."""
    raw = os.environ.get(JOB_LOG_MAX_ENV, "")
    try:
        value = int(raw) if raw else JOB_LOG_MAX_BYTES
    except ValueError:
        log.warning(
            "%s=%r is not a number of bytes; job logs are rotated past %d bytes",
            JOB_LOG_MAX_ENV,
            raw,
            JOB_LOG_MAX_BYTES,
        )
        return JOB_LOG_MAX_BYTES
    return max(value, 4096)  # a few lines at least, whatever is asked


def rotated(path: Path) -> Path:
    """Where the part of a job's log before its last rotation is kept."""
    return path.with_name(path.name + ".1")


def read_job_log(path: Path) -> bytes | None:
    """The last ``JOB_LOG_BYTES`` of a job's log (its rotated part first, then its file);
    None when there is none."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - JOB_LOG_BYTES))
            data = f.read()
    except OSError:
        return None
    if len(data) < JOB_LOG_BYTES:
        try:
            with rotated(path).open("rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - (JOB_LOG_BYTES - len(data))))
                data = f.read() + data
        except OSError:
            pass  # never rotated
    return data


def rotate_job_log(reader: BinaryIO, path: Path, keep_bytes: int) -> None:
    """Keep the last ``keep_bytes`` of what ``reader`` has read of ``path`` (up to its
    position: the caller read to the end just before) as the rotated part, and start the file
    again. Synchronous, with no checkpoint between the caller's last read and the truncation,
    so that only what the job writes in that instant is lost from the file."""
    end = reader.tell()
    start = max(0, end - keep_bytes)
    with path.open("rb") as f, rotated(path).open("wb") as out:
        f.seek(start)
        left = end - start
        while left > 0 and (chunk := f.read(min(left, 1 << 20))):
            out.write(chunk)
            left -= len(chunk)
    os.truncate(path, 0)
    reader.seek(0)


def tls_from_environ() -> TLSConfig | None:
    """The TLS settings ``ACTORGRID_TLS`` names (a job's, on a TLS cluster), or None."""
    raw = os.environ.get(TLS_ENV)
    if not raw:
        return None
    try:
        return TLSConfig.from_dict(json.loads(raw))
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"{TLS_ENV} must be JSON with certfile, keyfile and cafile paths, as "
            f"TLSConfig.to_dict() writes them ({exc}); fix or unset it"
        ) from None


class _Job:
    __slots__ = (
        "argv",
        "attached",
        "driver",
        "end_time",
        "ended",
        "exit_code",
        "followers",
        "job_id",
        "pid",
        "proc",
        "start_time",
        "stopped",
    )

    def __init__(
        self,
        job_id: str,
        argv: tuple[str, ...],
        proc: trio.Process | None,
        pid: int = 0,
        start_time: float | None = None,
    ) -> None:
        self.job_id = job_id
        self.argv = argv
        # None: a job a restarted head learnt of from its driver (JobRejoin); it ends with
        # the driver's link, its exit status unknown.
        self.proc = proc
        self.pid = proc.pid if proc is not None else pid
        self.driver: Peer | None = None  # the rejoined driver's link, for such a job
        self.start_time = time.time() if start_time is None else start_time
        self.end_time: float | None = None
        self.exit_code: int | None = None
        self.followers: set[Peer] = set()
        self.ended = trio.Event()
        self.stopped = False
        self.attached: Peer | None = None  # the submitter it ends with, if it follows

    def summary(self) -> JobSummary:
        if self.proc is None and self.ended.is_set():
            state = "stopped" if self.stopped else "ended"  # its exit status is unknown
        elif self.exit_code is None:
            state = "running"
        elif self.stopped:
            state = "stopped"
        else:
            state = "succeeded" if self.exit_code == 0 else "failed"
        return JobSummary(
            self.job_id,
            self.argv,
            state,
            self.exit_code,
            self.start_time,
            self.end_time,
            self.pid,
        )


class JobHost:
    def __init__(
        self,
        address: Callable[[], str],
        secret: bytes,
        envs: EnvHost,
        session: SessionFolder,
        background: Callable[..., None],
        tls: TLSConfig | None = None,
    ) -> None:
        self._tls = tls
        self._address = address
        self._secret = secret
        self._envs = envs
        self._session = session
        self._background = background
        self.jobs: dict[str, _Job] = {}
        self.log_folder = job_log_folder()

    def __repr__(self) -> str:
        return f"<JobHost jobs={len(self.jobs)}>"

    def handlers(self) -> dict[type, Callable[[Peer, Any], None]]:
        return {
            SubmitJob: self._on_submit,
            QueryJobs: self._on_query,
            QueryJobLogs: self._on_logs,
            StopJob: self._on_stop,
            JobRejoin: self._on_rejoin,
        }

    def process_gone(self, peer: Peer) -> None:
        """A submitter that leaves takes its followed jobs with it (a Ctrl-C at ``submit``
        that never reached us, a killed ``submit``): no job outlives the one waiting on it."""
        for job in self.jobs.values():
            if job.driver is peer and not job.ended.is_set():
                job.end_time = time.time()
                job.ended.set()
            if peer in job.followers:
                job.followers.discard(peer)
                if job.attached is peer:
                    self._background("stopping a job whose submitter left", self._stop, job)

    async def stop_all(self) -> None:
        """Stop every running job (the head is stopping)."""
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as nursery:
                for job in self.jobs.values():
                    if not job.ended.is_set():
                        nursery.start_soon(self._stop, job)

    # --- submit ----------------------------------------------------------------------------

    def _on_submit(self, peer: Peer, msg: SubmitJob) -> None:
        self._background("running a job", self._run, peer, msg)

    async def _run(self, peer: Peer, msg: SubmitJob) -> None:
        job_id = "job-" + secrets.token_hex(4)
        env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV_VARS}
        env.update(
            ACTORGRID_ADDRESS=self._address(),
            ACTORGRID_SECRET=self._secret.hex(),
            ACTORGRID_JOB_ID=job_id,  # jobclient.JOB_ID_ENV
            PYTHONUNBUFFERED="1",
        )
        if self._tls is not None:
            env[TLS_ENV] = json.dumps(self._tls.to_dict())
        cwd = None
        if msg.working_dir:
            package = self._envs.package_path(msg.working_dir)
            if package is None:
                peer.send(JobStarted(msg.rid, "", f"the head has no package {msg.working_dir}"))
                return
            folder = await trio.to_thread.run_sync(
                functools.partial(unpack, check=False),
                package.read_bytes(),
                job_id,
                self._session.path / "jobs",
            )
            cwd = str(folder)
            env[ENVIRON_VAR] = json.dumps({"working_dir": cwd})
        env.update(dict(msg.env_vars))
        path = self.log_folder / f"{job_id}.log"
        try:
            self.log_folder.mkdir(parents=True, exist_ok=True)
            out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            peer.send(
                JobStarted(
                    msg.rid,
                    "",
                    f"could not make the job's log file {path} on the head's machine: {exc}; "
                    "set ACTORGRID_LOG_DIR to a writable folder where the head runs",
                )
            )
            return
        try:
            proc = await trio.lowlevel.open_process(
                list(msg.argv),
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        except OSError as exc:
            peer.send(
                JobStarted(
                    msg.rid,
                    "",
                    f"could not start {' '.join(msg.argv)!r} on the head's machine: {exc}; "
                    "check the command (a program on the head's PATH, e.g. `python script.py`)",
                )
            )
            return
        finally:
            os.close(out)
        job = _Job(job_id, msg.argv, proc)
        self._remember(job)
        if msg.follow:
            job.followers.add(peer)
            job.attached = peer
        peer.send(JobStarted(msg.rid, job_id))
        log.info("job %s started: %s (pid %d)", job_id, " ".join(msg.argv), proc.pid)
        try:
            async with trio.open_nursery() as nursery:
                exited = trio.Event()
                nursery.start_soon(self._follow, job, path, exited)
                code = await proc.wait()
                exited.set()
        finally:
            if proc.returncode is None:
                with trio.CancelScope(shield=True):
                    _signal_group(proc.pid, signal.SIGKILL)
                    await proc.wait()
            job.exit_code = proc.returncode
            job.end_time = time.time()
            job.ended.set()
        log.info("job %s ended with exit code %d", job_id, code)
        for follower in job.followers:
            follower.send(JobEnded(job_id, code))

    async def _follow(self, job: _Job, path: Path, exited: trio.Event) -> None:
        """Stream the job's log file to the ``submit`` that follows it, until the job ended
        and all it wrote was read."""
        try:
            reader = path.open("rb")
        except OSError as exc:
            log.warning("job %s: its log file %s cannot be read: %s", job.job_id, path, exc)
            return
        limit = job_log_max_bytes()
        with reader:
            while True:
                done = exited.is_set()  # before the read: what it wrote last is read after
                chunk = reader.read(65536)
                if reader.tell() >= limit:
                    chunk += reader.read()  # to its end, then rotate with no checkpoint
                    try:
                        rotate_job_log(reader, path, limit)
                    except OSError as exc:
                        log.warning(
                            "job %s: its log file %s could not be rotated (%s); it grows on",
                            job.job_id,
                            path,
                            exc,
                        )
                        limit = 2**62
                if chunk:
                    for follower in list(job.followers):
                        # A slow submitter slows the reading, never the job (its file grows).
                        await follower.send_wait(JobOutput(job.job_id, chunk))
                elif done:
                    return
                else:
                    with trio.move_on_after(JOB_OUTPUT_POLL_S):
                        await exited.wait()

    def _remember(self, job: _Job) -> None:
        self.jobs[job.job_id] = job
        if len(self.jobs) > JOBS_KEPT:
            for old in [j for j in self.jobs.values() if j.ended.is_set()][:1]:
                del self.jobs[old.job_id]
                (self.log_folder / f"{old.job_id}.log").unlink(missing_ok=True)
                rotated(self.log_folder / f"{old.job_id}.log").unlink(missing_ok=True)

    def _on_rejoin(self, peer: Peer, msg: JobRejoin) -> None:
        """A job's driver reconnected: a restarted head lists the job again (a head that
        knows it already has nothing to learn)."""
        if msg.job_id in self.jobs or peer.closed:
            return
        job = _Job(msg.job_id, msg.argv, None, msg.pid, msg.start_time)
        job.driver = peer
        self._remember(job)
        log.info("job %s (pid %d) rejoined after a head restart", msg.job_id, msg.pid)

    # --- list, logs, stop ------------------------------------------------------------------

    def _on_query(self, peer: Peer, msg: QueryJobs) -> None:
        peer.send(JobList(msg.rid, tuple(j.summary() for j in self.jobs.values())))

    def _find(self, job_id: str) -> _Job | str:
        job = self.jobs.get(job_id)
        if job is not None:
            return job
        matches = [j for j in self.jobs.values() if j.job_id.startswith(job_id)]
        if len(matches) == 1:
            return matches[0]
        return (
            f"no job {job_id!r} on this cluster's head (it never ran, or was forgotten); "
            "`actorgrid jobs list` shows the jobs it knows"
        )

    def _on_logs(self, peer: Peer, msg: QueryJobLogs) -> None:
        job = self._find(msg.job_id)
        if isinstance(job, str):
            # A job this head never ran (one that ended before it restarted) has its file.
            job_id = msg.job_id if self._log_path(msg.job_id) else ""
        else:
            job_id = job.job_id
        data = read_job_log(self.log_folder / f"{job_id}.log") if job_id else None
        if data is None:
            peer.send(JobLogs(msg.rid, b"", job if isinstance(job, str) else None))
            return
        peer.send(JobLogs(msg.rid, data))

    def _log_path(self, job_id: str) -> bool:
        """A job id (no path in it) with a log file here."""
        return (
            job_id.startswith("job-")
            and job_id[4:].isalnum()
            and (self.log_folder / f"{job_id}.log").is_file()
        )

    def _on_stop(self, peer: Peer, msg: StopJob) -> None:
        job = self._find(msg.job_id)
        if isinstance(job, str):
            peer.send(Ack(msg.rid, job))
            return

        async def stop_then_ack() -> None:
            await self._stop(job)
            peer.send(Ack(msg.rid))

        self._background("stopping a job", stop_then_ack)

    async def _stop(self, job: _Job) -> None:
        if job.ended.is_set():
            return
        job.stopped = True
        _signal_group(job.pid, signal.SIGTERM)
        with trio.move_on_after(JOB_STOP_GRACE_S):
            await job.ended.wait()
        if not job.ended.is_set():
            _signal_group(job.pid, signal.SIGKILL)
            await job.ended.wait()


def _signal_group(pid: int, sig: int) -> None:
    """``sig`` to a job's process group (its own session: its pid is the group's id)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
