"""A ``print`` in a task on another host reaches the driver, prefixed with where it ran.

A head on h0, a node agent on h1 (network namespaces made by the ``hosts`` fixture, see
tests/hostlab.py), a driver on h0: the worker's line crosses h1's node agent, the head and
the driver's link to it. Needs root and ``ip netns``; skips with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time

from hostlab import Hosts
from proclines import read_line

PULSE_S = 0.2
HEAD_PORT = 7413
LINE_TIMEOUT_S = 60.0

_DRIVER = """
import json, os, socket, sys
import actorgrid as ag

address, secret = sys.argv[1], bytes.fromhex(sys.argv[2])
head_host = address.rpartition(":")[0]

@ag.remote
def greet() -> dict:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((head_host, 9))
        ip = probe.getsockname()[0]
    print(f"greetings from {ip}")
    return {"pid": os.getpid(), "host": socket.gethostname(), "ip": ip}

with ag.init(address=address, secret=secret, pulse_interval=float(sys.argv[3])):
    print(json.dumps(ag.get(greet.remote())), flush=True)
    sys.stdin.readline()  # stays connected until the test has seen the line
"""


def _lines_until(proc: subprocess.Popen[str], want: str) -> list[str]:
    """The process's stdout lines up to one containing ``want``."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + LINE_TIMEOUT_S
    while not any(want in line for line in lines):
        left = deadline - time.monotonic()
        assert left > 0, f"{want!r} not printed within {LINE_TIMEOUT_S} s: {lines}"
        line = read_line(proc, left)
        if line is not None:
            assert line, f"exited with {proc.wait(10)} before printing {want!r}: {lines}"
            lines.append(line.rstrip("\n"))
    return lines


def test_a_print_on_another_host_reaches_the_driver_with_its_prefix(hosts: Hosts) -> None:
    secret = os.urandom(32).hex()
    script = textwrap.dedent
    _, address = hosts.start_head(HEAD_PORT, secret, PULSE_S)
    hosts.start_node(1, address, secret, PULSE_S)
    driver = hosts.run(0, script(_DRIVER), address, secret, str(PULSE_S), stdin=True)

    lines = _lines_until(driver, "greetings from")
    if not any(line.startswith("{") for line in lines):
        lines += _lines_until(driver, "{")
    answer = json.loads(next(line for line in lines if line.startswith("{")))
    assert answer["ip"] == hosts.addresses[1]  # it ran on h1
    printed = next(line for line in lines if "greetings from" in line)
    assert (
        printed
        == f"(greet pid={answer['pid']} node={answer['host']}) greetings from {answer['ip']}"
    )
    assert driver.stdin is not None
    driver.stdin.write("bye\n")
    driver.stdin.flush()
    assert driver.wait(timeout=60) == 0
