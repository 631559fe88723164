"""What the cluster commands share: secret files, the files next to the cluster file,
processes, and short-lived driver connections to ask a head something.

Processes are checked with psutil, and a zombie counts as gone: a process whose parent has
exited is reparented to an init that may never reap it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psutil
import trio

import actorgrid as ag

__all__ = [
    "CLUSTER_FILE_ENV",
    "CONNECT_TIMEOUT_S",
    "ClusterPaths",
    "alive",
    "connect_error",
    "create_time",
    "descendants",
    "fail",
    "find_leaf",
    "is_loopback",
    "leaves",
    "log_tail",
    "query",
    "reachable_address",
    "read_secret_file",
    "read_sidecar",
    "say",
    "secret_file_warning",
    "signal_group",
    "stop_processes",
    "wait_gone",
    "write_private",
]

T = TypeVar("T")

# Documented by ag.ClusterFile.default_path(); `actorgrid up` sets it for the head it starts.
CLUSTER_FILE_ENV = "ACTORGRID_CLUSTER_FILE"
# How long a command waits for a head to answer before it says it cannot reach it.
CONNECT_TIMEOUT_S = 10.0
LOG_TAIL_LINES = 20
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


@dataclass(frozen=True)
class ClusterPaths:
    """The cluster file and the files `actorgrid up` keeps beside it, named after it."""

    cluster_file: Path

    @classmethod
    def default(cls) -> ClusterPaths:
        return cls(ag.ClusterFile.default_path())

    def _beside(self, suffix: str) -> Path:
        return self.cluster_file.with_name(f"{self.cluster_file.stem}{suffix}")

    @property
    def sidecar(self) -> Path:
        """JSON: the processes `up` started (head and node launchers) and its secret file."""
        return self._beside(".processes.json")

    @property
    def secret(self) -> Path:
        return self._beside(".secret")

    @property
    def head_log(self) -> Path:
        return self._beside(".head.log")

    def node_log(self, index: int, host: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", host)
        return self._beside(f".node-{index}-{safe}.log")


def say(line: str = "") -> None:
    """A line of progress on stdout, flushed: it may go to a log file that someone tails."""
    print(line, flush=True)


def fail(command: str, message: str, status: int = 1) -> int:
    print(f"actorgrid {command}: {message}", file=sys.stderr, flush=True)
    return status


# --- files ----------------------------------------------------------------------------------


def write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by this user only (0600, in a 0700 folder), atomically."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")  # created 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def read_secret_file(path: Path) -> bytes:
    """The secret a file holds in hex; ValueError says what is wrong with the file."""
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"cannot read the secret file {path}: {exc.strerror or exc}") from None
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if not secret:
        raise ValueError(
            f"the secret file {path} does not hold a secret in hex; pass the file that "
            "`actorgrid start --head` or `actorgrid up` printed"
        )
    return secret


def secret_file_warning(path: Path) -> str | None:
    """A warning if others may read the secret file, as ssh gives for a private key."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"warning: the secret file {path} is readable by other users; `chmod 600 {path}`"
    return None


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc.strerror or exc})"
    tail = text.splitlines()[-lines:]
    return "\n".join(f"  | {line}" for line in tail) if tail else "  | (empty)"


def reachable_address(address: str) -> str:
    """``address`` with a wildcard host (0.0.0.0) replaced by this machine's name, for
    others to connect to."""
    host, _, port = address.rpartition(":")
    if host.strip("[]") in _WILDCARD_HOSTS:
        return f"{socket.gethostname()}:{port}"
    return address


def is_loopback(address: str) -> bool:
    host = address.rpartition(":")[0].strip("[]")
    return host == "localhost" or host.startswith("127.") or host == "::1"


# --- processes ------------------------------------------------------------------------------


def alive(pid: int, create_time: float | None = None) -> bool:
    """Whether ``pid`` runs (not a zombie), and is the process created at ``create_time``."""
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 0.01:
            return False  # the pid now belongs to an unrelated process
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def create_time(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def descendants(pids: Iterable[int]) -> dict[int, float]:
    """Every live descendant of ``pids``, with its creation time."""
    found: dict[int, float] = {}
    for pid in pids:
        try:
            children = psutil.Process(pid).children(recursive=True)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for child in children:
            try:
                found[child.pid] = child.create_time()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
    return found


def wait_gone(procs: dict[int, float | None], timeout_s: float) -> dict[int, float | None]:
    """Poll until every process in ``procs`` (pid: creation time) is gone, at most
    ``timeout_s``; the ones still alive."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = {pid: t for pid, t in procs.items() if alive(pid, t)}
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def signal_group(pid: int, sig: int) -> None:
    """Signal the process group ``pid`` leads (or the process alone, if it leads none)."""
    try:
        os.killpg(pid, sig)
        return
    except (ProcessLookupError, PermissionError):
        pass
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_processes(
    procs: dict[int, float | None], *, grace_s: float, group: bool = False
) -> tuple[list[int], list[int]]:
    """SIGTERM each live process (its group, with ``group``), SIGKILL what is left after
    ``grace_s``; returns (terminated, killed) pids."""
    procs = {pid: t for pid, t in procs.items() if alive(pid, t)}
    for pid in procs:
        if group:
            signal_group(pid, signal.SIGTERM)
        else:
            _kill(pid, signal.SIGTERM)
    left = wait_gone(procs, grace_s)
    for pid in left:
        if group:
            signal_group(pid, signal.SIGKILL)
        else:
            _kill(pid, signal.SIGKILL)
    wait_gone(left, 5.0)
    return [pid for pid in procs if pid not in left], list(left)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def read_sidecar(path: Path) -> dict[str, Any]:
    """The processes `up` recorded; empty when there is no such file or it is damaged."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# --- asking a head --------------------------------------------------------------------------


def leaves(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions inside (nested) exception groups, or ``exc`` itself."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from leaves(inner)
    else:
        yield exc


def find_leaf(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    return next((e for e in leaves(exc) if isinstance(e, kind)), None)


def query(
    address: str,
    ask: Callable[[ag.Cluster], Awaitable[T]],
    *,
    secret: bytes | None = None,
    timeout_s: float = CONNECT_TIMEOUT_S,
) -> T:
    """Connect to the head at ``address`` ("auto": the cluster file's) as a driver, run
    ``ask(cluster)``, disconnect. Raises trio.TooSlowError after ``timeout_s``."""

    async def main() -> T:
        with trio.fail_after(timeout_s):
            async with ag.connect(address, secret=secret, log_to_driver=False) as cluster:
                return await ask(cluster)

    try:
        return trio.run(main)
    except BaseExceptionGroup as group:
        first = next(leaves(group))
        raise first from None


def connect_error(exc: BaseException, address: str) -> str:
    """One line for a failure to ask the head at ``address``: what, why, and the fix."""
    where = f"the head at {address}"
    if isinstance(exc, ag.NotInitializedError):
        return str(exc)
    if isinstance(exc, ag.AuthenticationError):
        return (
            f"{where} rejected our secret ({exc}); use the secret of that cluster "
            "(ACTORGRID_SECRET in hex, or the cluster file `actorgrid up` wrote)"
        )
    if isinstance(exc, trio.TooSlowError):
        return (
            f"{where} did not answer within {CONNECT_TIMEOUT_S:.0f} s; check that it runs "
            "(`actorgrid up` starts one) and that this machine can reach it"
        )
    if isinstance(exc, OSError):
        return (
            f"cannot reach {where} ({exc.strerror or exc}); is it running? `actorgrid up` "
            "starts one, and `actorgrid down` clears a stale cluster file"
        )
    if isinstance(exc, ValueError):  # no secret for an explicit address
        return str(exc)
    return f"asking {where} failed: {type(exc).__name__}: {exc}"
