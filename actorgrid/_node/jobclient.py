"""``cluster.jobs``: submit, list, read and stop jobs (``actorgrid submit`` and ``jobs``).

A submitted job's output comes back on this driver's link to the head as it is written
(``JobOutput``), then its exit status (``JobEnded``); :class:`JobRun` hands both to the
caller through a bounded channel, so a slow reader holds the link back instead of
buffering without end.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import attrs
import trio

from .._env.packing import pack_folder
from .._exceptions import ActorgridError, NotInitializedError
from .._protocol.envmessages import (
    JobEnded,
    JobList,
    JobLogs,
    JobOutput,
    JobRejoin,
    JobStarted,
    QueryJobLogs,
    QueryJobs,
    StopJob,
    SubmitJob,
)
from .._protocol.messages import Ack
from .._runtime.core import Runtime
from .._runtime.peer import Peer
from .._transport.tls import TLSConfig
from .envdriver import upload_package
from .jobs import tls_from_environ
from .standalone import ClusterFile

__all__ = ["JOB_ID_ENV", "JobRun", "JobStatistics", "Jobs", "driver_tls", "rejoin_as_job"]

# Set by the head in a job's environment: the driver that has it is that job's.
JOB_ID_ENV = "ACTORGRID_JOB_ID"

# Chunks of output a JobRun holds before the link waits for its reader.
_OUTPUT_BUFFER = 256


@attrs.frozen
class JobStatistics:
    """A job as the head knows it (``actorgrid jobs list``)."""

    job_id: str
    argv: tuple[str, ...]
    state: str  # "running", "succeeded", "failed", "stopped"; "ended": see JobSummary
    exit_code: int | None
    start_time: float
    end_time: float | None
    pid: int


class JobRun:
    """A job this process submitted: its id, its output as it comes, its exit status."""

    def __init__(self, job_id: str, receive: trio.MemoryReceiveChannel[bytes | int]) -> None:
        self.job_id = job_id
        self._receive = receive
        self.exit_code: int | None = None

    def __repr__(self) -> str:
        return f"<JobRun {self.job_id} exit_code={self.exit_code}>"

    async def output(self) -> AsyncIterator[bytes]:
        """The job's output (stdout and stderr merged), chunk by chunk, until it exits."""
        async for item in self._receive:
            if isinstance(item, int):
                self.exit_code = item
                return
            yield item

    async def wait(self) -> int:
        """Its exit status (output not yet read is dropped)."""
        async for _ in self.output():
            pass
        if self.exit_code is None:
            raise ActorgridError(
                f"the link to the head closed before job {self.job_id} ended; its state is "
                "in `actorgrid jobs list`"
            )
        return self.exit_code


class Jobs:
    """The jobs of the cluster this process is connected to (``cluster.jobs``)."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._runs: dict[str, trio.MemorySendChannel[bytes | int]] = {}
        rt.on_message(JobOutput, self._on_output)
        rt.on_message(JobEnded, self._on_ended)

    def __repr__(self) -> str:
        return f"<Jobs following={len(self._runs)}>"

    def _on_output(self, peer: Peer, msg: JobOutput) -> Any:
        send = self._runs.get(msg.job_id)
        if send is not None:
            return _deliver(send, msg.data)
        return None

    def _on_ended(self, peer: Peer, msg: JobEnded) -> Any:
        send = self._runs.pop(msg.job_id, None)
        if send is not None:
            return _deliver(send, msg.exit_code, close=True)
        return None

    async def submit_async(
        self,
        argv: Sequence[str],
        *,
        working_dir: str | os.PathLike[str] | None = None,
        excludes: Sequence[str] = (),
        env_vars: Mapping[str, str] | None = None,
        follow: bool = True,
    ) -> JobRun:
        """Run ``argv`` as a driver on the head's machine, in ``working_dir`` (shipped there,
        minus ``excludes``). ``follow``: its output and end come to this process, and the job
        is stopped if this process leaves the cluster first; without it, the job runs on its
        own (``actorgrid jobs logs``/``stop``) and the JobRun yields nothing."""
        if not argv:
            raise ValueError("a job needs a command, e.g. ['python', 'script.py']")
        digest = ""
        if working_dir is not None:
            package = await trio.to_thread.run_sync(
                lambda: pack_folder(working_dir, tuple(excludes))
            )
            await upload_package(self._rt, package)
            digest = package.digest
        send, receive = trio.open_memory_channel[bytes | int](_OUTPUT_BUFFER)
        env = tuple(sorted((env_vars or {}).items()))
        reply = await self._rt.head_request(
            lambda rid: SubmitJob(rid, tuple(argv), digest, env, follow=follow)
        )
        assert isinstance(reply, JobStarted)
        if reply.error is not None:
            raise ActorgridError(reply.error)
        if follow:
            self._runs[reply.job_id] = send
        else:
            send.close()
        return JobRun(reply.job_id, receive)

    async def list_async(self) -> list[JobStatistics]:
        reply = await self._rt.head_request(QueryJobs)
        assert isinstance(reply, JobList)
        return [JobStatistics(*attrs.astuple(j, recurse=False)) for j in reply.jobs]

    async def logs_async(self, job_id: str) -> str:
        reply = await self._rt.head_request(lambda rid: QueryJobLogs(rid, job_id))
        assert isinstance(reply, JobLogs)
        if reply.error is not None:
            raise ActorgridError(reply.error)
        return reply.data.decode(errors="replace")

    async def stop_async(self, job_id: str) -> None:
        """Stop a job (SIGTERM to its process group, SIGKILL after a grace period); returns
        once it has exited."""
        reply = await self._rt.head_request(lambda rid: StopJob(rid, job_id))
        assert isinstance(reply, Ack)
        if reply.error is not None:
            raise ActorgridError(reply.error)


async def _deliver(
    send: trio.MemorySendChannel[bytes | int], item: bytes | int, *, close: bool = False
) -> None:
    try:
        await send.send(item)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # nobody reads this job's output any more
    if close:
        await send.aclose()


def driver_tls(address: str) -> TLSConfig | None:
    """The TLS files a driver joining the head at ``address`` uses when it is given none:
    ``ACTORGRID_TLS`` (a job's, on a TLS cluster), else those of the cluster `actorgrid up`
    recorded if its head is at ``address`` (`actorgrid submit`, `status`, ... connect with
    the address and secret they read from that file), else None."""
    tls = tls_from_environ()
    if tls is not None:
        return tls
    try:
        recorded = ClusterFile.load()
    except NotInitializedError:
        return None
    if recorded.address != address or recorded.tls is None:
        return None
    return TLSConfig.from_dict(recorded.tls)


def rejoin_as_job(rt: Runtime) -> None:
    """A job's driver (``ACTORGRID_JOB_ID`` set) tells each head it reconnects to which job
    it is, so that a restarted head lists it again (``JobRejoin``)."""
    job_id = os.environ.get(JOB_ID_ENV)
    if not job_id or rt.headlink is None:
        return
    argv = (os.path.basename(sys.executable), *sys.argv)
    started = time.time()

    async def report(head: Peer) -> None:
        head.send(JobRejoin(job_id, argv, os.getpid(), started))

    rt.headlink.on_reconnected.append(report)
