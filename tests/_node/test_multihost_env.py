"""A runtime_env's working_dir shipped to nodes on other hosts (network namespaces).

The head runs on h0, node agents on h1 and h2, the driver on h0. The driver's project folder
exists only where the driver is; once ``ag.init(runtime_env=...)`` has returned, the driver
deletes it, and the tasks on h1 and h2 still import its module: from the copy their node
fetched from the head over the cluster's own links. node_setup and node_cleanup run once on
each node, and say where they ran.

Needs root and ``ip netns``; skips with the reason otherwise. CI runs as root.
"""

from __future__ import annotations

import os
import textwrap
import time
import uuid
from pathlib import Path

from hostlab import Hosts, read_json

HEAD_PORT = 7412
PULSE_S = 0.2
CLEANUP_TIMEOUT_S = 30.0

_DRIVER = """
import json, os, shutil, socket, sys
import actorgrid as ag

address, secret, project, record, module = sys.argv[1:6]
head_host = address.rpartition(":")[0]

def my_ip():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((head_host, 9))
        return probe.getsockname()[0]

def node_setup():
    with open(record, "a") as f:
        f.write(f"setup {my_ip()} {os.getcwd()}\\n")

def node_cleanup():
    with open(record, "a") as f:
        f.write(f"cleanup {my_ip()}\\n")

@ag.remote
def use_shipped():
    import importlib
    shipped = importlib.import_module(module)
    return shipped.answer(), shipped.__file__, my_ip()

runtime_env = {"working_dir": project, "node_setup": node_setup, "node_cleanup": node_cleanup,
               "excludes": ["*.tmp"]}
ag.init(address=address, secret=bytes.fromhex(secret), pulse_interval=0.2,
        runtime_env=runtime_env)
shutil.rmtree(project)  # from here on, only the shipped copies exist
seen = {}
for _ in range(20):
    for answer, file, ip in ag.get([use_shipped.remote() for _ in range(8)], timeout=60):
        seen[ip] = (answer, file)
    if len(seen) == 2:
        break
print(json.dumps({"seen": seen}), flush=True)
ag.shutdown()
"""


def _script(template: str) -> str:
    return textwrap.dedent(template)


def test_working_dir_is_shipped_to_hosts_that_lack_it_and_node_hooks_run_on_each(
    hosts: Hosts, tmp_path: Path
) -> None:
    secret = os.urandom(32).hex()
    module = f"hostmod_{uuid.uuid4().hex[:8]}"
    project = tmp_path / "project"
    project.mkdir()
    (project / f"{module}.py").write_text("def answer():\n    return 'from the project'\n")
    (project / "scratch.tmp").write_text("x" * 100_000)
    record = tmp_path / "hooks.txt"

    _, address = hosts.start_head(HEAD_PORT, secret, PULSE_S)
    for i in (1, 2):
        hosts.start_node(i, address, secret, PULSE_S)
    driver = hosts.run(0, _script(_DRIVER), address, secret, str(project), str(record), module)
    seen = read_json(driver)["seen"]
    assert driver.wait(timeout=60) == 0

    assert sorted(seen) == sorted(hosts.addresses[1:])  # it ran on both node hosts
    files = {Path(file) for _, file in seen.values()}
    assert all(answer == "from the project" for answer, _ in seen.values())
    assert len(files) == 2  # each node its own copy, in its own session folder
    assert not any(f.is_relative_to(project) for f in files)
    setups = [line.split() for line in record.read_text().splitlines() if line.startswith("setup")]
    assert sorted(ip for _, ip, _ in setups) == sorted(hosts.addresses[1:])  # once per node
    assert {Path(cwd) for _, _, cwd in setups} == {f.parent for f in files}
    # The driver left: its environment is released on each node, node_cleanup runs once.
    deadline = time.monotonic() + CLEANUP_TIMEOUT_S
    while time.monotonic() < deadline:
        cleanups = [
            x.split()[1] for x in record.read_text().splitlines() if x.startswith("cleanup")
        ]
        if len(cleanups) >= 2:
            break
        time.sleep(0.1)
    assert sorted(cleanups) == sorted(hosts.addresses[1:])
