"""``ag.init`` as users call it: the worker template process starts first, then the runtime.

A cold ``ag.init()`` has two long imports on its critical path: the driver's (the runtime, the
head, the node agent) and the template process's (everything a worker runs, ``template.py``),
which must finish before the first worker forks. Started one after the other they add up;
here the template process is started before the driver imports anything of the runtime, so
the two import side by side (on two cores, in about the time of the longer one).

This module imports only the standard library (no Trio, no runtime): ``init`` below is what
``actorgrid.init`` is until the runtime is loaded. It starts the template with
``subprocess`` (``prestart_template``), then imports ``cluster.py`` and calls its ``init``;
``template.run_template`` adopts the process it finds here (``take_prestarted``) instead of
starting one. A template that no cluster adopted (``ag.init`` failed, or joined a running
cluster) is killed and reaped before ``init`` returns. Asked anything but a call (its
docstring, defaults, ``inspect.signature``), ``init`` answers with the real function's.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cluster import Cluster

__all__ = [
    "SECRET_ENV_VARS",
    "discard_prestarted",
    "init",
    "prestart_template",
    "take_prestarted",
    "template_supported",
    "worker_environment",
]

# Environment variables a worker must never inherit from its node agent.
SECRET_ENV_VARS = ("ACTORGRID_SECRET",)

# The template started by ``prestart_template`` that no cluster has adopted yet: its process
# and this process's end of its socket.
_prestarted: tuple[subprocess.Popen[bytes], socket.socket] | None = None


def template_supported() -> bool:
    """Forking workers needs Linux (PR_SET_PDEATHSIG) and ``ACTORGRID_WORKER_TEMPLATE`` not 0."""
    return sys.platform == "linux" and os.environ.get("ACTORGRID_WORKER_TEMPLATE", "1") != "0"


def worker_environment() -> dict[str, str]:
    """This process's environment without the cluster secret."""
    return {k: v for k, v in os.environ.items() if k not in SECRET_ENV_VARS}


def prestart_template() -> None:
    """Start a template process now (see the module docstring), unless one waits already or
    templates are not supported; a failure to start it is left to ``run_template`` to meet
    and report."""
    global _prestarted
    if _prestarted is not None or not template_supported():
        return
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "actorgrid._node.templateproc", str(theirs.fileno())],
            stdin=subprocess.DEVNULL,
            pass_fds=(theirs.fileno(),),
            env=worker_environment(),
            start_new_session=True,
        )
    except OSError:
        ours.close()
        return
    finally:
        theirs.close()
    _prestarted = (proc, ours)


def take_prestarted() -> tuple[subprocess.Popen[bytes], socket.socket] | None:
    """The prestarted template, now the caller's to run and close; None if there is none or
    it has already exited."""
    global _prestarted
    taken, _prestarted = _prestarted, None
    if taken is not None and taken[0].poll() is not None:
        taken[1].close()
        return None
    return taken


def discard_prestarted() -> None:
    """Stop a prestarted template that nothing adopted, and reap it. It has forked nothing
    (only an adopter asks it to), so it is killed rather than left to finish its imports
    and read its socket's EOF."""
    taken = take_prestarted()
    if taken is None:
        return
    proc, sock = taken
    sock.close()
    proc.kill()
    proc.wait()


def _starts_embedded(address: str | None) -> bool:
    if address or os.environ.get("ACTORGRID_ADDRESS"):
        return False
    cluster = sys.modules.get("actorgrid._node.cluster")
    if cluster is not None and cluster.is_initialized():
        return False  # ag.init raises "already initialized": no template for that
    trio = sys.modules.get("trio")  # not imported: this is no Trio thread
    return trio is None or not trio.lowlevel.in_trio_run()


def _cluster_init() -> Any:
    from .cluster import init as cluster_init

    return cluster_init


class _Init:
    # ``ag.init`` as users see it (see the module docstring): a call starts the template,
    # then runs the real ``cluster.init``; anything else asked of it (its docstring, its
    # defaults, ``inspect.signature`` through ``__wrapped__``) is the real function's.

    def __init__(self) -> None:
        self.__name__ = self.__qualname__ = "init"

    def __call__(self, address: str | None = None, **options: Any) -> Cluster:
        if _starts_embedded(address):
            prestart_template()
        try:
            cluster: Cluster = _cluster_init()(address, **options)
            return cluster
        finally:
            discard_prestarted()  # none left if the embedded cluster adopted it

    def __repr__(self) -> str:
        return repr(_cluster_init())

    @property
    def __wrapped__(self) -> Any:
        return _cluster_init()

    @property
    def __doc__(self) -> str | None:  # type: ignore[override]
        doc: str | None = _cluster_init().__doc__
        return doc

    def __getattr__(self, name: str) -> Any:
        return getattr(_cluster_init(), name)


init = _Init()
