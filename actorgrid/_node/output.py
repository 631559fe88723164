"""A node agent's side of worker output: read the pipes, keep log files, forward lines.

- ``pump_output(stream, ...)``: reads one worker pipe (stdout or stderr) to EOF. Every line
  goes to that worker's log file; lines tagged by a call (see ``_runtime/output.py``) go to
  ``OutputSink`` for the drivers; untagged ones (the runtime's own logging, a crash before
  start-up) are copied to the agent's own stdout/stderr as before, and stderr's last lines are
  kept for crash-loop reports. The pipe is read without pause, so a worker never waits on a
  slow driver: what the sink cannot hold is dropped, with a count.
- ``OutputSink``: the lines waiting to go to the head, at most SINK_MAX_LINES; sent as one
  WorkerOutput per FLUSH_INTERVAL_S.
- ``WorkerLogFile``: ``worker-<id>.log`` in the node's log folder, rotated at LOG_MAX_BYTES
  (LOG_BACKUPS older files kept: ``.1``, ``.2``). Each line is
  ``TIME STREAM (SOURCE pid=P node=H) TEXT``.
- ``read_logs(folder, ...)``: the lines of those files that match, for ``actorgrid logs``.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import trio

from .._protocol.ids import NodeId, WorkerId
from .._protocol.observe import LogLines, OutputLine, ReadLogs, WorkerOutput
from .._runtime.output import LINE_MAX_CHARS, decode_line
from .._runtime.peer import Peer
from .logs import RateLimitedLog
from .spawn import WorkerProcess

__all__ = [
    "FLUSH_INTERVAL_S",
    "OutputSink",
    "WorkerLogFile",
    "answer_read_logs",
    "log_folder",
    "pump_output",
    "read_logs",
    "start_pumps",
]

FLUSH_INTERVAL_S = 0.1
SINK_MAX_LINES = 20_000
LOG_MAX_BYTES = 16 * 1024 * 1024
LOG_BACKUPS = 2
_errors = RateLimitedLog(logging.getLogger("actorgrid.node"))
_LINE = re.compile(r"^\S+ (?:out|err) \((\S*) pid=\d+ node=\S*\) ")


def log_folder(node_id: NodeId) -> Path:
    """Where this node's worker logs go: $ACTORGRID_LOG_DIR, else the temp folder."""
    root = os.environ.get("ACTORGRID_LOG_DIR") or os.path.join(
        tempfile.gettempdir(), "actorgrid-logs"
    )
    return Path(root) / f"node-{node_id.hex()}"


class WorkerLogFile:
    """One worker's log file, rotated by size; written from the agent's loop (local disk,
    buffered, flushed once per chunk read from the pipe)."""

    def __init__(self, path: Path, max_bytes: int = LOG_MAX_BYTES, backups: int = LOG_BACKUPS):
        self.path = path
        self._max = max_bytes
        self._backups = backups
        self._file: TextIO | None = None
        self._size = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
            self._size = self._file.tell()
        except OSError as exc:
            # The worker runs all the same; its output still reaches the drivers.
            _errors.warning("logfile", "cannot write worker log file %s: %s", path, exc)

    def write(self, line: str) -> None:
        if self._file is None or self._file.closed:
            return
        data = line + "\n"
        self._file.write(data)
        self._size += len(data)
        if self._size >= self._max:
            self._rotate()

    def flush(self) -> None:
        if self._file is not None and not self._file.closed:
            try:
                self._file.flush()
            except OSError as exc:
                _errors.warning("logfile", "cannot write worker log file %s: %s", self.path, exc)

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass  # a full disk: what was written is all there is

    def _rotate(self) -> None:
        self.close()
        self._file = None
        self._size = 0
        try:
            for i in range(self._backups, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i}")
                newer = self.path.with_name(f"{self.path.name}.{i - 1}") if i > 1 else self.path
                if newer.exists():
                    os.replace(newer, older)
            self._file = open(self.path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
        except OSError as exc:
            _errors.warning("logfile", "cannot rotate worker log file %s: %s", self.path, exc)


class OutputSink:
    """Tagged lines waiting to go to the head; bounded, dropping the newest with a count."""

    def __init__(self, node_id: NodeId, hostname: str, max_lines: int | None = None) -> None:
        self.node_id = node_id
        self.hostname = hostname
        self._max = SINK_MAX_LINES if max_lines is None else max_lines
        self._lines: list[OutputLine] = []
        self.dropped = 0

    def add(self, line: OutputLine) -> None:
        if len(self._lines) >= self._max:
            self.dropped += 1
        else:
            self._lines.append(line)

    def take(self) -> WorkerOutput | None:
        if not self._lines and not self.dropped:
            return None
        msg = WorkerOutput(self.node_id, self.hostname, tuple(self._lines), self.dropped)
        self._lines = []
        self.dropped = 0
        return msg

    async def serve(self, send: Callable[[WorkerOutput], object]) -> None:
        """Send what has gathered every FLUSH_INTERVAL_S, until cancelled."""
        while True:
            await trio.sleep(FLUSH_INTERVAL_S)
            msg = self.take()
            if msg is not None:
                send(msg)


async def pump_output(
    stream: trio.abc.ReceiveStream,
    name: str,
    worker_id: WorkerId,
    pid: int,
    logfile: WorkerLogFile,
    sink: OutputSink,
    copy: Callable[[bytes], None],
    done: trio.Event,
    tail: deque[str] | None = None,
) -> None:
    """Read one worker pipe (``name``: "out" or "err") to EOF; see the module docstring."""
    partial = b""
    where = f"pid={pid} node={sink.hostname}"
    try:
        while chunk := await stream.receive_some(65536):
            *raw_lines, partial = (partial + chunk).split(b"\n")
            if len(partial) > LINE_MAX_CHARS * 4:
                raw_lines.append(partial)
                partial = b""
            untagged: list[bytes] = []
            now = time.time()
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now)) + f".{now % 1:.3f}"[2:]
            for raw in raw_lines:
                text = raw.decode(errors="replace").rstrip("\r")
                tagged = decode_line(text)
                if tagged is None:
                    untagged.append(raw + b"\n")
                    logfile.write(f"{stamp} {name} (worker {where}) {text}")
                    if tail is not None:
                        tail.append(text[:500])
                    continue
                source, owner, text = tagged
                logfile.write(f"{stamp} {name} ({source} {where}) {text}")
                sink.add(OutputLine(worker_id, pid, source, owner, name, text, now))
            logfile.flush()
            if untagged:
                await trio.to_thread.run_sync(copy, b"".join(untagged), abandon_on_cancel=True)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    finally:
        if partial:
            text = partial.decode(errors="replace")
            tagged = decode_line(text)
            if tagged is not None:
                sink.add(OutputLine(worker_id, pid, tagged[0], tagged[1], name, tagged[2]))
                text = tagged[2]
            elif tail is not None:
                tail.append(text[:500])
            logfile.write(f"- {name} (worker {where}) {text}")
        logfile.flush()
        done.set()
        with trio.CancelScope(shield=True):
            await stream.aclose()


def read_logs(folder: Path, worker: str = "", actor: str = "", tail: int = 0) -> list[str]:
    """Lines of the log files in ``folder`` (oldest file first), those of workers whose id
    starts with ``worker`` and, with ``actor``, only lines written by calls of that actor (its
    name or class); the last ``tail`` of them (0: all)."""
    if not folder.is_dir():
        return []
    kept: list[str] = []
    for path in sorted(folder.glob("worker-*.log")):
        wid = path.name.removeprefix("worker-").removesuffix(".log")
        if not wid.startswith(worker.lower()):
            continue
        files = [path.with_name(f"{path.name}.{i}") for i in range(LOG_BACKUPS, 0, -1)]
        for file in [*files, path]:
            try:
                with open(file, encoding="utf-8", errors="replace") as f:
                    for line in f:
                        line = line.rstrip("\n")
                        if actor:
                            m = _LINE.match(line)
                            if m is None or m.group(1) != actor:
                                continue
                        kept.append(line)
            except FileNotFoundError:
                continue
    kept.sort()  # by time: each line starts with its timestamp
    return kept[-tail:] if tail else kept


def _write_fd(fd: int, data: bytes) -> None:
    # In a thread: our own output may be a slow pipe, and the agent's loop must not wait on it.
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        pass


class WorkerPumps:
    """The readers of one worker process's stdout and stderr, and its log file."""

    def __init__(self, logfile: WorkerLogFile) -> None:
        self.logfile = logfile
        self._done: list[trio.Event] = []

    async def wait(self) -> None:
        """Until both pipes reached EOF (the worker and its children closed them)."""
        for done in self._done:
            await done.wait()

    def close(self) -> None:
        self.logfile.close()


def start_pumps(
    nursery: trio.Nursery,
    proc: WorkerProcess,
    worker_id: WorkerId,
    folder: Path,
    sink: OutputSink,
    stderr_tail: deque[str],
) -> WorkerPumps:
    """Start reading ``proc``'s output pipes (those it has) in ``nursery``."""
    pumps = WorkerPumps(WorkerLogFile(folder / f"worker-{worker_id.hex()}.log"))
    pipes = (("out", proc.stdout, 1, None), ("err", proc.stderr, 2, stderr_tail))
    for name, stream, fd, tail in pipes:
        if stream is None:
            continue
        done = trio.Event()
        pumps._done.append(done)

        def copy(data: bytes, fd: int = fd) -> None:
            _write_fd(fd, data)

        nursery.start_soon(
            pump_output, stream, name, worker_id, proc.pid, pumps.logfile, sink, copy, done, tail
        )
    return pumps


async def answer_read_logs(peer: Peer, msg: ReadLogs, folder: Path) -> None:
    """A node agent's answer to the head's ReadLogs: this node's matching lines."""
    try:
        lines = await trio.to_thread.run_sync(read_logs, folder, msg.worker, msg.actor, msg.tail)
    except OSError as exc:
        peer.send(LogLines(msg.rid, (), f"could not read the logs in {folder}: {exc}"))
        return
    peer.send(LogLines(msg.rid, tuple(lines)))
