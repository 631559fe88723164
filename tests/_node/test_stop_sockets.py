"""A cluster stopped while a dropped link is being dialled again leaves no socket open behind
it, in any of its processes: the driver, its node's template, the workers (a socket left to
the collector shows as "ResourceWarning: unclosed ..." on the stderr the processes share)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import os, signal, socket, time
    import actorgrid as ag
    from actorgrid._runtime import current

    @ag.remote
    class Pid:
        def pid(self):
            return os.getpid()

    ag.init(num_workers=2)
    actor = Pid.remote()
    pid = ag.get(actor.pid.remote(), timeout=30)
    rt = current.get()
    link = rt.peers[actor._info.address]
    # Its worker stopped, the dropped link's redial waits in its handshake; the worker goes
    # on as the cluster stops, so the redial is in flight when the stop begins.
    os.kill(pid, signal.SIGSTOP)
    try:
        link._stream.sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + 30
        while not (link.closed and actor._info.address in rt._relinking):
            assert time.monotonic() < deadline, "the link was not redialled"
            time.sleep(0.005)
    finally:
        os.kill(pid, signal.SIGCONT)
    ag.shutdown()
    print("stopped", flush=True)
    """
)


def test_a_stop_while_a_link_is_redialled_leaves_no_socket_unclosed(tmp_path: Path) -> None:
    script = tmp_path / "stop.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONWARNINGS="always::ResourceWarning")
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0, done.stderr
    assert "stopped" in done.stdout
    assert "ResourceWarning" not in done.stderr, done.stderr
