"""Hosts in network namespaces for tests: h0..h2 joined by veth pairs to a bridge in a fourth
"switch" namespace, so nothing touches the machine's own network.

Use the ``hosts`` fixture (tests/conftest.py): it creates the namespaces, skips the test with the
reason when they cannot be made (needs root and ``ip netns``; CI runs as root), and afterwards
kills every process started with ``hosts.run`` and removes the namespaces. Import the helpers
with ``from hostlab import read_json, tell, not_zombie`` (tests/ is on pytest's pythonpath).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
from proclines import read_line

SUBNET = "10.231.0"

# A head on argv[1]:argv[3] (secret argv[2] in hex, pulse interval argv[4]); prints its address.
HEAD_SCRIPT = """
import functools, json, sys, trio
import actorgrid as ag

async def main():
    async with trio.open_nursery() as nursery:
        address = await nursery.start(functools.partial(
            ag.serve_head, secret=bytes.fromhex(sys.argv[2]), host=sys.argv[1],
            port=int(sys.argv[3]), pulse_interval=float(sys.argv[4])))
        print(json.dumps({"address": address}), flush=True)

trio.run(main)
"""

# A node agent joining argv[1] (secret argv[2], pulse interval argv[3], more serve_node keyword
# arguments as JSON in argv[4]); prints its pid once joined.
NODE_SCRIPT = """
import functools, json, os, sys, trio
import actorgrid as ag

async def main():
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(
            ag.serve_node, sys.argv[1], secret=bytes.fromhex(sys.argv[2]),
            pulse_interval=float(sys.argv[3]), **json.loads(sys.argv[4])))
        print(json.dumps({"joined": os.getpid()}), flush=True)

trio.run(main)
"""
LINE_TIMEOUT_S = 60.0


def netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs the `ip` command (iproute2)"
    probe = f"agprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


class Hosts:
    """h0..h2 with addresses SUBNET.1..3, on a bridge in the switch namespace."""

    def __init__(self, folder: Path) -> None:
        # Processes run in a folder of their own, as a user's would: from the repository
        # root, `python -m`/`-c` would import the source tree instead of the installed package.
        self.folder = folder
        tag = str(os.getpid() % 100_000)
        self.switch = f"agsw{tag}"
        self.names = [f"agh{i}x{tag}" for i in range(3)]
        self.ports = [f"ags{i}x{tag}" for i in range(3)]  # switch side of each veth
        self.addresses = [f"{SUBNET}.{i + 1}" for i in range(3)]
        self.procs: list[subprocess.Popen[str]] = []

    def create(self) -> None:
        ip("netns", "add", self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")
        for name, port, address in zip(self.names, self.ports, self.addresses, strict=True):
            ip("netns", "add", name)
            ip("link", "add", f"{port}h", "type", "veth", "peer", "name", port)
            ip("link", "set", f"{port}h", "netns", name)
            ip("link", "set", port, "netns", self.switch)
            ip("-n", name, "link", "set", f"{port}h", "name", "eth0")
            ip("-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
            ip("-n", name, "link", "set", "eth0", "up")
            ip("-n", name, "link", "set", "lo", "up")
            ip("-n", self.switch, "link", "set", port, "master", "br0")
            ip("-n", self.switch, "link", "set", port, "up")

    def set_link(self, host: int, up: bool) -> None:
        ip("-n", self.switch, "link", "set", self.ports[host], "up" if up else "down")

    def run(self, host: int, script: str, *args: str, stdin: bool = False) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.names[host], sys.executable, "-c", script, *args],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
            cwd=self.folder,
        )
        self.procs.append(proc)
        return proc

    def start_head(
        self, port: int, secret: str, pulse_s: float
    ) -> tuple[subprocess.Popen[str], str]:
        """A head on h0 (``ag.serve_head``); returns its process and address once it listens."""
        head = self.run(0, HEAD_SCRIPT, self.addresses[0], secret, str(port), str(pulse_s))
        address: str = read_json(head)["address"]
        return head, address

    def start_node(
        self, host: int, address: str, secret: str, pulse_s: float, **options: Any
    ) -> subprocess.Popen[str]:
        """A node agent on ``host`` (``ag.serve_node``, one worker unless ``options`` say
        otherwise) joining ``address``; returns once it has joined."""
        node = self.run(
            host,
            NODE_SCRIPT,
            address,
            secret,
            str(pulse_s),
            json.dumps({"num_workers": 1, **options}),
        )
        read_json(node)
        return node

    def destroy(self) -> list[int]:
        """Kill every process started here and all their descendants; remove the netns.
        Returns the pids that were running, for the caller to check they are gone."""
        seen: list[psutil.Process] = []
        for proc in self.procs:
            try:
                parent = psutil.Process(proc.pid)
                seen += [parent, *parent.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        for p in seen:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(seen, timeout=10)
        for proc in self.procs:
            proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
            if proc.stdin is not None:
                proc.stdin.close()
        for name in [*self.names, self.switch]:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        return [p.pid for p in seen]


def not_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def read_json(proc: subprocess.Popen[str], timeout: float = LINE_TIMEOUT_S) -> dict[str, Any]:
    """The next JSON line the process prints (other lines are skipped)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no line from pid {proc.pid} within {timeout} s"
        line = read_line(proc, left)
        if line is None:
            continue
        assert line, f"pid {proc.pid} exited with {proc.wait(10)} before answering"
        if line.startswith("{"):
            data: dict[str, Any] = json.loads(line)
            return data


def tell(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
