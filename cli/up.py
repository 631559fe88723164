"""``actorgrid up`` and ``actorgrid down``: a cluster in the background, on this machine
and, with ``up --config``, on the hosts a cluster.toml names.

``up`` runs ``actorgrid start --head --write-cluster-file`` as a background process (a
session of its own, output to a log beside the cluster file), and for each configured host
a node command, handing it the secret on stdin. Beside the cluster file it keeps:

- ``<name>.secret``: the secret it generated (0600), for ``actorgrid node --secret-file``;
- ``<name>.processes.json``: the pids (and creation times, against pid reuse) of the head
  and the node launchers, and the secret file to remove, for ``down``;
- ``<name>.head.log``, ``<name>.node-<i>-<host>.log``: their output.

Start-up is all or nothing: if the head or any node fails to come up within
``STARTUP_TIMEOUT_S``, ``up`` prints the logs' tails, stops what it started, and exits 1.
``down`` SIGTERMs the head (which stops every node, then itself), then whatever launchers
and processes they started are still alive, and removes the files.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

import actorgrid as ag

from ._common import (
    CLUSTER_FILE_ENV,
    ClusterPaths,
    connect_error,
    create_time,
    fail,
    is_loopback,
    log_tail,
    query,
    reachable_address,
    read_secret_file,
    read_sidecar,
    say,
    write_private,
)
from ._options import (
    COMMAND_FIELDS,
    TLS_KEYS,
    UP_OPTIONS,
    ClusterConfig,
    OptionError,
    add_option_flags,
    load_cluster_config,
    merge_options,
)
from .down import is_head, stop_everything

if TYPE_CHECKING:
    _Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["add_up"]

STARTUP_TIMEOUT_S = 60.0
# How long an existing cluster file's head gets to answer before `up` calls it stale.
ANSWER_TIMEOUT_S = 5.0
SECRET_BYTES = 32
_UP_FLAGS = tuple(o for o in UP_OPTIONS if o.key != "secret_file")


class _StartupFailed(Exception):
    """Part of the cluster did not come up; the message says what, with log tails."""


# --- actorgrid up ---------------------------------------------------------------------------


def add_up(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser(
        "up",
        help="start a cluster in the background (a head here, and nodes from --config)",
        description=(
            "Start a cluster head and its workers (one per CPU unless --num-workers says "
            "otherwise) on this machine in the background, and with --config the nodes that "
            "cluster.toml names; return once every worker is connected. Record the cluster in "
            'the cluster file for ag.init(address="auto") and `actorgrid down`. If a cluster '
            "is already running, say where (its settings stay as they are)."
        ),
    )
    add_option_flags(parser, _UP_FLAGS)
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="a cluster.toml with [head] options and [nodes] hosts, num_workers and command; "
        "flags override [head]",
    )
    parser.set_defaults(handler=_run_up)


def _run_up(args: argparse.Namespace) -> int:
    paths = ClusterPaths.default()
    try:
        config = load_cluster_config(Path(args.config)) if args.config else None
        head_options = merge_options(UP_OPTIONS, config.head if config else {}, args)
        if head_options["num_workers"] is None:
            head_options["num_workers"] = os.cpu_count() or 1
        if config is not None:
            _node_argv(config.command, "HOST", "ADDRESS", 1, 0)  # a bad template fails now
        running = _running_cluster(paths)
    except (OptionError, _StartupFailed) as exc:
        return fail("up", str(exc))
    if running is not None:
        recorded, num_workers = running
        say(
            f"a cluster is already running at {recorded.address} (head pid "
            f"{recorded.head_pid}, {_workers(num_workers)} connected)"
        )
        _say_not_applied(args)
        _print_how_to_use(recorded, paths)
        return 0
    try:
        cluster_file = _start(paths, head_options, config)
    except KeyboardInterrupt:
        stop_everything(paths, quiet=True)
        return fail("up", "interrupted; stopped what had started", 130)
    except (_StartupFailed, OSError, ValueError) as exc:
        stop_everything(paths, quiet=True)
        what = f"cannot start the cluster: {exc}" if isinstance(exc, OSError) else str(exc)
        return fail("up", f"{what}\n(stopped what had started: nothing is left running)")
    _print_how_to_use(cluster_file, paths)
    return 0


def _workers(n: int) -> str:
    return f"{n} worker{'s' if n != 1 else ''}"


def _say_not_applied(args: argparse.Namespace) -> None:
    """Name the options given to an `up` that found a cluster running: they were not
    applied, and how to apply them."""
    given = [
        f"{o.flag} {shlex.quote(str(getattr(args, o.key)))}"
        for o in _UP_FLAGS
        if hasattr(args, o.key)
    ]
    if args.tls:
        given.append("--tls")
    if args.config:
        given.append(f"--config {shlex.quote(args.config)}")
    if not given:
        return
    flags = " ".join(given)
    say(
        f"note: not applied: {flags}; a running cluster keeps the settings it was started "
        f"with. To apply them, stop it and start it again: `actorgrid down`, then "
        f"`actorgrid up {flags}`"
    )


def _running_cluster(paths: ClusterPaths) -> tuple[ag.ClusterFile, int] | None:
    """The cluster the cluster file records and its number of workers, if its head answers;
    a stale file is removed."""
    if not paths.cluster_file.exists():
        return None
    try:
        recorded = ag.ClusterFile.load(paths.cluster_file)
    except ag.NotInitializedError as exc:  # damaged: the message says what to do
        raise _StartupFailed(str(exc)) from None

    async def count_workers(cluster: ag.Cluster) -> int:
        await cluster.nodes_async()  # the membership is current once the head has answered
        return len(cluster.workers())

    try:
        num_workers = query(
            recorded.address, count_workers, secret=recorded.secret, timeout_s=ANSWER_TIMEOUT_S
        )
        return recorded, num_workers
    except Exception:
        pass
    sidecar = read_sidecar(paths.sidecar)
    if is_head(recorded.head_pid, sidecar):
        raise _StartupFailed(
            f"the cluster file {paths.cluster_file} records a head (pid {recorded.head_pid}) "
            f"that runs but does not answer at {recorded.address}; stop it with "
            "`actorgrid down`, then run `actorgrid up` again"
        )
    say(
        f"removing the stale cluster file {paths.cluster_file}: its head "
        f"(pid {recorded.head_pid}) is gone"
    )
    stop_everything(paths, quiet=True)
    return None


def _open_log(path: Path) -> int:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)


def _start(
    paths: ClusterPaths, options: dict[str, Any], config: ClusterConfig | None
) -> ag.ClusterFile:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    env = {**os.environ, CLUSTER_FILE_ENV: str(paths.cluster_file), "PYTHONUNBUFFERED": "1"}
    generated = options["secret_file"] is None
    if generated:
        secret_path = paths.secret
        secret = os.urandom(SECRET_BYTES)
        write_private(secret_path, secret.hex() + "\n")
    else:
        secret_path = Path(options["secret_file"]).expanduser().absolute()
        secret = read_secret_file(secret_path)
    sidecar: dict[str, Any] = {
        "head": None,
        "launchers": [],
        "secret_file": str(secret_path),
        "generated_secret": generated,  # then `down` removes it
    }
    write_private(paths.sidecar, json.dumps(sidecar))
    argv = [
        sys.executable, "-m", "actorgrid.cli", "start", "--head", "--write-cluster-file",
        "--secret-file", str(secret_path),
        "--host", options["host"],
        "--port", str(options["port"]),
        "--num-workers", str(options["num_workers"]),
        "--pulse-interval", repr(options["pulse_interval"]),
        "--grace", repr(options["grace"]),
        "--max-message-bytes", str(options["max_message_bytes"]),
        "--max-unauthenticated", str(options["max_unauthenticated"]),
        "--handshake-timeout", repr(options["handshake_timeout"]),
        "--dashboard", options["dashboard"],
    ]  # fmt: skip
    for key in TLS_KEYS:
        if options.get(key):
            argv += [f"--{key}", str(Path(options[key]).expanduser().absolute())]
    if options.get("resources"):
        argv += ["--resources", json.dumps(options["resources"])]
    if options.get("object_store_memory"):
        argv += ["--object-store-memory", str(options["object_store_memory"])]
    if options.get("labels"):
        argv += ["--labels", ",".join(f"{k}={v}" for k, v in options["labels"].items())]
    log = _open_log(paths.head_log)
    try:
        head = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, start_new_session=True
        )
    finally:
        os.close(log)
    sidecar["head"] = {"pid": head.pid, "create_time": create_time(head.pid)}
    write_private(paths.sidecar, json.dumps(sidecar))
    say(f"starting a cluster head (pid {head.pid}; log: {paths.head_log})")
    recorded = _wait_for_cluster_file(paths, head, deadline)

    launchers: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    expected_nodes = 1 if options["num_workers"] > 0 else 0
    expected_workers = options["num_workers"]
    if config is not None and config.hosts:
        recorded = ag.ClusterFile(
            recorded.address,
            recorded.secret,
            head_pid=recorded.head_pid,
            num_workers=recorded.num_workers,
            nodes=config.hosts,
            tls=recorded.tls,
        )
        recorded.save(paths.cluster_file)
        if is_loopback(recorded.address) and config.command.startswith("ssh"):
            say(
                f"note: the head listens on {recorded.address}, which other machines cannot "
                "reach; set host in [head] to this machine's address on their network"
            )
        for index, host in enumerate(config.hosts):
            launchers.append(
                _launch_node(paths, index, host, recorded, config, options, env, sidecar)
            )
        expected_nodes += len(config.hosts)
        expected_workers += len(config.hosts) * config.num_workers
    _wait_for_members(
        recorded, head, paths.head_log, launchers, expected_nodes, expected_workers, deadline
    )
    local = options["num_workers"]
    if local:
        say(
            f"{_workers(local)} started on this machine, all connected"
            + (f" ({expected_workers} in the cluster)" if expected_workers != local else "")
            + ": drivers can run work now"
        )
    else:
        say(
            "no workers on this machine (--num-workers 0)"
            + (
                f"; {_workers(expected_workers)} connected on the nodes"
                if expected_workers
                else "; join nodes with the `actorgrid node` line below before running work"
            )
        )
    return recorded


def _wait_for_cluster_file(
    paths: ClusterPaths, head: subprocess.Popen[bytes], deadline: float
) -> ag.ClusterFile:
    while True:
        status = head.poll()
        if status is not None:
            raise _StartupFailed(
                f"the head exited with status {status} while starting; the end of its log "
                f"{paths.head_log}:\n{log_tail(paths.head_log)}"
            )
        try:
            recorded = ag.ClusterFile.load(paths.cluster_file)
            if recorded.head_pid == head.pid:
                return recorded
        except ag.NotInitializedError:
            pass
        if time.monotonic() > deadline:
            raise _StartupFailed(
                f"the head did not start within {STARTUP_TIMEOUT_S:.0f} s; the end of its log "
                f"{paths.head_log}:\n{log_tail(paths.head_log)}"
            )
        time.sleep(0.05)


def _node_argv(
    command: str,
    host: str,
    address: str,
    num_workers: int,
    max_message_bytes: int,
    tls: dict[str, str] | None = None,
) -> list[str]:
    """``command`` split like a shell would (no shell runs it), each word formatted."""
    fields: dict[str, object] = {
        "host": host,
        "address": address,
        "num_workers": num_workers,
        "max_message_bytes": max_message_bytes,
        "python": sys.executable,
        **{key: (tls or {}).get(key, "") for key in TLS_KEYS},
    }
    known = ", ".join("{" + f + "}" for f in COMMAND_FIELDS)
    try:
        argv = [word.format(**fields) for word in shlex.split(command)]
    except KeyError as exc:
        raise OptionError(
            f"[nodes] command uses the unknown field {{{exc.args[0]}}}; the known ones are {known}"
        ) from None
    except (ValueError, IndexError) as exc:
        raise OptionError(
            f"[nodes] command {command!r} is not a valid template ({exc}); it may use "
            f"{known}, and {{{{ }}}} for literal braces"
        ) from None
    if not argv:
        raise OptionError("[nodes] command is empty")
    return argv


def _launch_node(
    paths: ClusterPaths,
    index: int,
    host: str,
    recorded: ag.ClusterFile,
    config: ClusterConfig,
    options: dict[str, Any],
    env: dict[str, str],
    sidecar: dict[str, Any],
) -> tuple[str, subprocess.Popen[bytes], Path]:
    argv = _node_argv(
        config.command,
        host,
        reachable_address(recorded.address),
        config.num_workers,
        options["max_message_bytes"],
        recorded.tls,
    )
    log_path = paths.node_log(index, host)
    log = _open_log(log_path)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        raise _StartupFailed(
            f"cannot run the node command for {host} ({argv[0]}: {exc.strerror or exc}); "
            "check [nodes] command"
        ) from None
    finally:
        os.close(log)
    sidecar["launchers"].append(
        {"host": host, "pid": proc.pid, "create_time": create_time(proc.pid), "log": str(log_path)}
    )
    write_private(paths.sidecar, json.dumps(sidecar))
    assert proc.stdin is not None
    try:
        proc.stdin.write(recorded.secret.hex().encode() + b"\n")
        proc.stdin.close()
    except BrokenPipeError:  # it exited already; the wait below reports it with its log
        pass
    say(f"starting a node on {host} (launcher pid {proc.pid}; log: {log_path})")
    return host, proc, log_path


def _wait_for_members(
    recorded: ag.ClusterFile,
    head: subprocess.Popen[bytes],
    head_log: Path,
    launchers: list[tuple[str, subprocess.Popen[bytes], Path]],
    expected_nodes: int,
    expected_workers: int,
    deadline: float,
) -> None:
    """Wait until the head reports the nodes and workers expected, saying each new node."""

    def check_processes() -> None:
        if head.poll() is not None:
            raise _StartupFailed(
                f"the head exited with status {head.returncode} while starting; the end of "
                f"its log {head_log}:\n{log_tail(head_log)}"
            )
        for host, proc, log_path in launchers:
            if proc.poll() is not None:
                raise _StartupFailed(
                    f"the node on {host} exited with status {proc.returncode} before joining; "
                    f"the end of its log {log_path}:\n{log_tail(log_path)}"
                )

    async def wait(cluster: ag.Cluster) -> None:
        seen: set[bytes] = set()
        while True:
            check_processes()
            nodes = await cluster.nodes_async()
            for node in nodes:
                if node.node_id not in seen:
                    seen.add(node.node_id)
                    say(
                        f"node joined: {node.hostname} (pid {node.pid}, {node.num_workers} "
                        f"worker{'s' if node.num_workers != 1 else ''}) "
                        f"[{len(seen)}/{expected_nodes}]"
                    )
            if len(nodes) >= expected_nodes and len(cluster.workers()) >= expected_workers:
                return
            await trio.sleep(0.1)

    try:
        query(
            recorded.address,
            wait,
            secret=recorded.secret,
            timeout_s=max(deadline - time.monotonic(), 1.0),
        )
    except _StartupFailed:
        raise
    except trio.TooSlowError:
        tails = "".join(
            f"\nthe end of the log of the node on {host} ({log_path}):\n{log_tail(log_path)}"
            for host, _, log_path in launchers
        )
        raise _StartupFailed(
            f"the cluster did not reach {expected_nodes} nodes and {expected_workers} workers "
            f"within {STARTUP_TIMEOUT_S:.0f} s{tails}"
        ) from None
    except Exception as exc:
        raise _StartupFailed(connect_error(exc, recorded.address)) from None


def _print_how_to_use(recorded: ag.ClusterFile, paths: ClusterPaths) -> None:
    sidecar = read_sidecar(paths.sidecar)
    secret_file = sidecar.get("secret_file")
    address = reachable_address(recorded.address)
    say(f"cluster head: {recorded.address} (pid {recorded.head_pid})")
    if recorded.nodes:
        say(f"nodes started on: {', '.join(recorded.nodes)}")
    say(f"cluster file: {paths.cluster_file}")
    if recorded.dashboard_url:
        say(f"dashboard: {recorded.dashboard_url}")
    say("connect a driver on this machine:")
    say('  ag.init(address="auto")')
    if secret_file:
        quoted = shlex.quote(secret_file)
        say("connect a driver from elsewhere (ag.init() reads both variables):")
        say(f"  ACTORGRID_ADDRESS={address} ACTORGRID_SECRET=$(cat {quoted}) python your_script.py")
        say("join another machine to it (copy the secret file there first):")
        say(f"  actorgrid node --address {address} --secret-file {quoted}")
    else:
        say(f"the secret is the 'secret' field (hex) of {paths.cluster_file}")
    if is_loopback(recorded.address):
        say(
            f"note: the head listens on {recorded.address.rpartition(':')[0]}, so only this "
            "machine can connect; for other machines run `actorgrid down`, then "
            "`actorgrid up --host ADDRESS` with this machine's address on their network"
        )
    say("stop it: actorgrid down")
