"""``actorgrid start --head`` and ``actorgrid node``: a head or a node, in the foreground.

Both run until SIGINT (Ctrl-C) or SIGTERM, which stop them cleanly with exit status 0: a
head stops its nodes first (each interrupts its workers, which get the grace period), then
itself; a node stops its workers. A node also exits (0) when the head closes it, as
``actorgrid down`` does.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import shlex
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

import actorgrid as ag

from ._common import (
    CLUSTER_FILE_ENV,
    ClusterPaths,
    fail,
    find_leaf,
    is_loopback,
    leaves,
    reachable_address,
    read_secret_file,
    say,
    secret_file_warning,
    write_private,
)
from ._options import (
    NODE_OPTIONS,
    START_OPTIONS,
    OptionError,
    add_options,
    listen_limits,
    resolve_options,
    save_options,
    tls_config,
)

if TYPE_CHECKING:
    _Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["add_node", "add_start"]

SECRET_BYTES = 32
# Beyond the grace period, how long closing the nodes may take before the head stops anyway.
NODE_CLOSE_MARGIN_S = 5.0
WORKERS_JOIN_TIMEOUT_S = 60.0
WORKERS_POLL_S = 0.1

log = logging.getLogger("actorgrid.cli")


def _configure_logging(role: str) -> None:
    """Every log line says when, which process and how bad: ``TIME ROLE[PID] LEVEL``, as the
    workers' lines do, so that a head's, a node's and their workers' lines merged in one file
    can be told apart."""
    logging.basicConfig(
        level=logging.WARNING,
        format=f"%(asctime)s {role}[%(process)d] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("actorgrid").setLevel(logging.INFO)


async def _cancel_on_signal(
    signals: Any, scope: trio.CancelScope, what: str, task_status: trio.TaskStatus[None]
) -> None:
    task_status.started()
    async for signum in signals:
        say(f"{signal.Signals(signum).name}: {what}")
        scope.cancel()
        return


# --- actorgrid start --head -------------------------------------------------------------------


def add_start(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser(
        "start",
        help="run a cluster head in the foreground (start --head)",
        description=(
            "Run a cluster head in the foreground until Ctrl-C or SIGTERM; with --num-workers, "
            "this machine's workers too. It prints the `actorgrid node` line that joins "
            "another machine. `actorgrid up` runs the same in the background."
        ),
    )
    parser.add_argument("--head", action="store_true", help="run a head (required)")
    add_options(parser, START_OPTIONS)
    parser.add_argument(
        "--write-cluster-file",
        action="store_true",
        help="record the address and secret in the cluster file while the head runs, for "
        'ag.init(address="auto") and `actorgrid down` (what `actorgrid up` uses)',
    )
    parser.set_defaults(handler=_run_start)


def _run_start(args: argparse.Namespace) -> int:
    if not args.head:
        return fail(
            "start",
            "`actorgrid start` runs a cluster head: add --head (to join a running head "
            "instead, use `actorgrid node --address HOST:PORT --secret-file FILE`)",
            status=2,
        )
    try:
        options = resolve_options(START_OPTIONS, args)
        if args.save_config is not None:
            save_options(Path(args.save_config), "actorgrid start --head", options)
            say(f"wrote the options to {args.save_config}")
            return 0
        tls = tls_config(options, args)
        secret, secret_path, generated = _head_secret(options["secret_file"])
    except (OptionError, ValueError, OSError) as exc:
        return fail("start", str(exc))
    _configure_logging("head")
    try:
        trio.run(_serve_head, options, secret, secret_path, generated, args.write_cluster_file, tls)
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were in place
        return 0
    except Exception as exc:
        return fail("start", _head_error(exc, options))
    finally:
        if generated:
            secret_path.unlink(missing_ok=True)
    say("the head has stopped")
    return 0


def _head_secret(secret_file: str | None) -> tuple[bytes, Path, bool]:
    """(secret, its file, whether it was generated here and is to be removed on exit)."""
    if secret_file is not None:
        path = Path(secret_file).expanduser().absolute()
        secret = read_secret_file(path)
        warning = secret_file_warning(path)
        if warning:
            print(warning, file=sys.stderr)
        return secret, path, False
    secret = os.urandom(SECRET_BYTES)
    path = ClusterPaths.default().cluster_file.parent / f"head-{os.getpid()}.secret"
    try:
        write_private(path, secret.hex() + "\n")
    except OSError as exc:
        raise OSError(
            f"cannot write the generated secret to {path} ({exc.strerror or exc}); pass "
            f"--secret-file, or set {CLUSTER_FILE_ENV} to a path in a writable folder"
        ) from None
    return secret, path, True


def _head_error(exc: BaseException, options: dict[str, Any]) -> str:
    where = f"{options['host']}:{options['port']}"
    for leaf in leaves(exc):
        if isinstance(leaf, OSError):
            return (
                f"cannot listen on {where} ({leaf.strerror or leaf}); choose another --port "
                "(0 picks a free one) or --host"
            )
    leaf = next(leaves(exc))
    return f"the head failed: {type(leaf).__name__}: {leaf}"


async def _serve_head(
    options: dict[str, Any],
    secret: bytes,
    secret_path: Path,
    generated: bool,
    write_cluster_file: bool,
    tls: ag.TLSConfig | None,
) -> None:
    cluster_file = ClusterPaths.default().cluster_file
    recorded = False
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        try:
            async with trio.open_nursery() as nursery:
                address: str = await nursery.start(
                    functools.partial(
                        ag.serve_head,
                        secret=secret,
                        host=options["host"],
                        port=options["port"],
                        num_workers=options["num_workers"],
                        resources=options["resources"],
                        labels=options["labels"],
                        object_store_memory=options["object_store_memory"],
                        pulse_interval=options["pulse_interval"],
                        grace_s=options["grace"],
                        max_message_bytes=options["max_message_bytes"],
                        listen_limits=listen_limits(options),
                        tls=tls,
                    )
                )
                dash_host, _, dash_port = options["dashboard"].rpartition(":")
                dashboard_url: str = await nursery.start(
                    functools.partial(
                        ag.serve_dashboard,
                        reachable_address(address),
                        secret=secret,
                        tls=tls,
                        host=dash_host.strip("[]"),
                        port=int(dash_port),
                    )
                )
                if write_cluster_file:
                    ag.ClusterFile(
                        address,
                        secret,
                        head_pid=os.getpid(),
                        num_workers=options["num_workers"],
                        tls=None if tls is None else tls.to_dict(),
                        dashboard=dashboard_url.partition("?")[0],
                    ).save(cluster_file)
                    recorded = True
                _announce_head(
                    address,
                    options["num_workers"],
                    secret_path,
                    generated,
                    cluster_file if recorded else None,
                )
                say(f"dashboard: {dashboard_url}")
                # A signal that came during start-up waits here, not lost.
                async for signum in signals:
                    say(f"{signal.Signals(signum).name}: stopping the nodes, then the head")
                    nursery.cancel_scope.cancel()
                    break
        finally:
            if recorded:
                _forget_cluster_file(cluster_file)


def _forget_cluster_file(path: Path) -> None:
    """Remove the cluster file if it still records this head (a newer one may own it now)."""
    try:
        if ag.ClusterFile.load(path).head_pid == os.getpid():
            ag.ClusterFile.remove(path)
    except ag.NotInitializedError:
        pass


def _announce_head(
    address: str,
    num_workers: int,
    secret_path: Path,
    generated: bool,
    cluster_file: Path | None,
) -> None:
    join = reachable_address(address)
    secret = shlex.quote(str(secret_path))
    say(
        f"actorgrid head listening at {address} (pid {os.getpid()}, "
        f"{num_workers} worker{'s' if num_workers != 1 else ''} on this machine)"
    )
    if generated:
        say(f"secret: generated into {secret_path} (removed when the head stops)")
    else:
        say(f"secret: from {secret_path}")
    if cluster_file is not None:
        say(f'cluster file: {cluster_file} (ag.init(address="auto") reads it)')
    say("join a node to this cluster (on its machine, with a copy of the secret file):")
    say(f"  actorgrid node --address {join} --secret-file {secret}")
    say("connect a driver (ag.init() reads both variables):")
    say(f"  ACTORGRID_ADDRESS={join} ACTORGRID_SECRET=$(cat {secret}) python your_script.py")
    if is_loopback(address):
        say(
            f"note: the head listens on {address.rpartition(':')[0]}, so only this machine "
            "can join; for other machines, start it with --host set to this machine's address on "
            "their network"
        )
    say("Ctrl-C or SIGTERM stops it (the nodes first, then the head)")


# --- actorgrid node -------------------------------------------------------------------------


def add_node(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser(
        "node",
        help="join this machine to a cluster head, in the foreground",
        description=(
            "Start worker processes on this machine (one per CPU unless --num-workers says "
            "otherwise) and join them to the head at --address, until Ctrl-C or SIGTERM, or "
            "until the head closes this node (`actorgrid down`); it says when its workers have "
            "joined. If the head is lost, the node keeps trying to join it again."
        ),
    )
    add_options(parser, NODE_OPTIONS)
    parser.add_argument(
        "--secret-stdin",
        action="store_true",
        help="read the cluster secret (one line of hex) from stdin instead of --secret-file; "
        "how `actorgrid up --config` passes it without putting it on a command line",
    )
    parser.set_defaults(handler=_run_node)


def _run_node(args: argparse.Namespace) -> int:
    if args.secret_stdin and hasattr(args, "secret_file"):
        return fail("node", "pass the secret one way: --secret-file or --secret-stdin", 2)
    try:
        options = resolve_options(NODE_OPTIONS, args)
        if args.save_config is not None:
            save_options(Path(args.save_config), "actorgrid node", options)
            say(f"wrote the options to {args.save_config}")
            return 0
        address: str | None = options["address"]
        if address is None:
            raise OptionError(
                "which head to join? pass --address HOST:PORT, as `actorgrid start --head` "
                "or `actorgrid up` printed it"
            )
        secret, source = _node_secret(args.secret_stdin, options["secret_file"], address)
        tls = tls_config(options, args)
    except (OptionError, ValueError) as exc:
        return fail("node", str(exc))
    _configure_logging("node")
    n = options["num_workers"]
    say(f"joining the head at {address} with {n if n is not None else 'one per CPU'} workers")
    try:
        closed_by_head = trio.run(_serve_node, address, secret, options, tls)
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were in place
        return 0
    except Exception as exc:
        if find_leaf(exc, ag.AuthenticationError) is not None:
            return fail(
                "node",
                f"the head at {address} rejected this node: the secret from {source} is not "
                "that cluster's secret; pass the secret file the head printed (--secret-file)",
            )
        leaf = next(leaves(exc))
        return fail("node", f"the node failed: {type(leaf).__name__}: {leaf}")
    if closed_by_head:
        say(f"the head at {address} closed this node")
    else:
        say("the node has stopped")
    return 0


def _node_secret(from_stdin: bool, secret_file: str | None, address: str) -> tuple[bytes, str]:
    """(the secret, where it came from): stdin, a file, $ACTORGRID_SECRET, or the cluster
    file when it records the same head."""
    if from_stdin:
        line = sys.stdin.readline().strip()
        try:
            secret = bytes.fromhex(line)
        except ValueError:
            secret = b""
        if not secret:
            raise ValueError("--secret-stdin: expected the cluster secret as one line of hex")
        return secret, "stdin"
    if secret_file is not None:
        path = Path(secret_file).expanduser()
        secret = read_secret_file(path)
        warning = secret_file_warning(path)
        if warning:
            print(warning, file=sys.stderr)
        return secret, str(path)
    env = os.environ.get("ACTORGRID_SECRET")
    if env:
        try:
            return bytes.fromhex(env), "ACTORGRID_SECRET"
        except ValueError:
            raise ValueError("ACTORGRID_SECRET must be the cluster secret in hex") from None
    try:
        recorded = ag.ClusterFile.load()
    except ag.NotInitializedError:
        recorded = None
    if recorded is not None and recorded.address == address:
        return recorded.secret, str(ag.ClusterFile.default_path())
    raise ValueError(
        "joining needs the cluster secret: pass --secret-file FILE (the file the head "
        "printed) or --secret-stdin, or set ACTORGRID_SECRET (hex)"
    )


async def _serve_node(
    address: str, secret: bytes, options: dict[str, Any], tls: ag.TLSConfig | None
) -> bool:
    """Serve until a signal (False) or until the head closes this node (True)."""
    closed_by_head = False
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                _cancel_on_signal, signals, nursery.cancel_scope, "stopping this node's workers"
            )

            async def run(task_status: trio.TaskStatus[None]) -> None:
                nonlocal closed_by_head
                await ag.serve_node(
                    address,
                    secret=secret,
                    num_workers=options["num_workers"],
                    num_cpus_per_worker=options["num_cpus_per_worker"],
                    resources=options["resources"],
                    labels=options["labels"],
                    object_store_memory=options["object_store_memory"],
                    pulse_interval=options["pulse_interval"],
                    grace_s=options["grace"],
                    max_message_bytes=options["max_message_bytes"],
                    listen_limits=listen_limits(options),
                    tls=tls,
                    task_status=task_status,
                )
                closed_by_head = True
                nursery.cancel_scope.cancel()

            await nursery.start(run)
            say(f"joined the head at {address} (node pid {os.getpid()})")
            nursery.start_soon(_report_workers, address, secret, tls, _num_workers(options))
    return closed_by_head


def _num_workers(options: dict[str, Any]) -> int:
    n: int | None = options["num_workers"]
    return n if n is not None else (os.cpu_count() or 1)


async def _report_workers(
    address: str, secret: bytes, tls: ag.TLSConfig | None, expected: int
) -> None:
    """Say when this node's workers have all joined the head (asked as a short-lived driver),
    or, after WORKERS_JOIN_TIMEOUT_S, how many have."""
    me = (socket.gethostname(), os.getpid())
    joined = 0

    async def count(cluster: ag.Cluster) -> int:
        nodes = await cluster.nodes_async()
        mine = {n.node_id for n in nodes if (n.hostname, n.pid) == me}
        return sum(w.node_id in mine for w in cluster.workers())

    ready = False
    failed: Exception | None = None
    try:
        with trio.move_on_after(WORKERS_JOIN_TIMEOUT_S):
            async with ag.connect(address, secret=secret, tls=tls) as cluster:
                while (joined := await count(cluster)) < expected:
                    await trio.sleep(WORKERS_POLL_S)
                say(
                    f"{expected} worker{'s' if expected != 1 else ''} of this node joined the "
                    "head: it is ready for work"
                )
                ready = True
    except* Exception as group:
        # Also when it comes grouped with this task's cancellation (the head closed this node
        # while it was still asking): the cancellation goes on, the node's exit stays clean.
        failed = group.exceptions[0]
    if failed is not None:
        log.warning("cannot tell whether this node's workers have joined: %s", failed)
        return
    if ready:
        return
    log.warning(
        "only %d of %d workers of this node joined the head within %.0f s; the log above says why",
        joined,
        expected,
        WORKERS_JOIN_TIMEOUT_S,
    )
