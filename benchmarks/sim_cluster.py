"""Mesa's wealth model on a 3-host cluster, beside Mesa in one process.

    python benchmarks/sim_cluster.py [--agents 10000 100000] [--steps 100] [--seeds 1]

Three hosts are network namespaces on this machine (``tests/hostlab.py``; needs root): a head
and a node of one worker on h0, a node of one worker on each of h1 and h2, talking over veth
pairs and a bridge, as three machines on a switch would. The driver on h0 runs
``examples/wealth.py --address HEAD --districts 3 * DISTRICTS_PER_WORKER`` as a user would
against a cluster of their own; Mesa runs the same model (``sim_workloads.run_mesa``) in one
process. The table gives both rates and both Gini coefficients.

The hosts share this machine's cores: on a 2-core machine the three workers, the head, the
driver and the kernel's forwarding between namespaces all run on two cores, so the cluster's
figure is what two cores make of three hosts' work, and the network is a memory copy. On three
real machines each worker has a host of its own (three times the cores) and a real network in
between: the round trips of a step cost more, the work of a step is spread over more cores.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sim_workloads import WEALTH, run_mesa, table, wealth_figures

TESTS = Path(__file__).resolve().parents[1] / "tests"
DISTRICTS_PER_WORKER = 2
TIMEOUT_S = 3600.0

# Runs examples/wealth.py as its __main__ with the secret in the environment and the rest of
# argv as its own (the hosts' runner takes a script and arguments, no environment).
_DRIVER = """
import os, runpy, sys
os.environ["ACTORGRID_SECRET"] = sys.argv[1]
sys.argv = [sys.argv[2], *sys.argv[3:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_three_hosts(agents: int, steps: int, seeds: int, pulse_s: float = 0.5) -> dict[str, Any]:
    """The wealth model on three netns hosts: its mean steps/s and Gini (mean, spread)."""
    sys.path.insert(0, str(TESTS))
    from hostlab import Hosts, netns_unavailable

    reason = netns_unavailable()
    if reason is not None:
        return {"skipped": reason}
    hosts = Hosts(Path(tempfile.mkdtemp(prefix="ag-bench-sim-hosts-")))
    try:
        hosts.create()
        secret = secrets.token_hex(32)
        _, address = hosts.start_head(0, secret, pulse_s)
        for host in range(3):
            hosts.start_node(host, address, secret, pulse_s)
        # A worker learns of the others from the head, after they have joined; a district
        # activated while the views differ moves when they settle (``_runtime/keyed.py``), and
        # the example's districts keep their people in memory (no on_deactivate hook), so a
        # move mid-run loses a district's state. The example then stops and says so (it hung
        # once in four runs before it did; four runs without this wait, at 10,000 and 100,000
        # agents, saw no move, as a node joins only once its workers have registered). Ten
        # pulse intervals let every view settle first all the same.
        time.sleep(10 * pulse_s)
        places = 3 * DISTRICTS_PER_WORKER
        argv = ["--agents", str(agents), "--steps", str(steps), "--seeds", str(seeds)]
        argv += ["--address", address, "--districts", str(places)]
        driver = hosts.run(0, _DRIVER, secret, str(WEALTH), *argv)
        out, _ = driver.communicate(timeout=TIMEOUT_S)
        if driver.returncode != 0:
            raise RuntimeError(f"examples/wealth.py on the hosts failed:\n{out}")
    finally:
        hosts.destroy()
    return wealth_figures(out, steps, seeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args()
    for agents in args.agents:
        print(f"\nwealth model, {agents:,} agents x {args.steps} steps, {args.seeds} seed(s)")
        cluster = run_three_hosts(agents, args.steps, args.seeds)
        if "skipped" in cluster:
            print(f"3 hosts: skipped ({cluster['skipped']})")
            rows: list[tuple[str, dict[str, float] | None]] = []
        else:
            rows = [("actorgrid, 3 hosts (1 worker each)", cluster)]
        rows.append(("mesa, 1 process", run_mesa(agents, args.steps, args.seeds)))
        print(table(agents, rows), flush=True)


if __name__ == "__main__":
    main()
