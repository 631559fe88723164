"""Labels, SPREAD and node affinity across three hosts in network namespaces: a head on h0,
node agents on h1 (labels zone=a) and h2 (zone=b, and a "camera"), a driver on h0.

Needs root and ``ip netns``; skips with the reason otherwise (the ``hosts`` fixture).
"""

from __future__ import annotations

import os
import textwrap

from hostlab import Hosts, read_json

PULSE_S = 0.2
HEAD_PORT = 7421

_DRIVER = """
import json, socket, sys, time
import actorgrid as ag

address, secret, pulse = sys.argv[1], bytes.fromhex(sys.argv[2]), float(sys.argv[3])
head_host = address.rpartition(":")[0]

def my_ip():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((head_host, 9))
        return probe.getsockname()[0]

@ag.remote
def where(seconds):
    time.sleep(seconds)
    return my_ip()

def ips(n=8, seconds=0.0, **options):
    return sorted(set(ag.get([where.options(**options).remote(seconds) for _ in range(n)],
                             timeout=60)))

cluster = ag.init(address=address, secret=secret, pulse_interval=pulse)
deadline = time.monotonic() + 60
while len(cluster.workers()) < 4:
    assert time.monotonic() < deadline, "the nodes' workers did not join"
    time.sleep(0.05)
by_zone = {n.labels["zone"]: n.node_id for n in cluster.nodes()}
result = {
    "zone_a": ips(label_selector={"zone": "a"}),
    "not_a": ips(label_selector={"zone": "!a"}),
    "in_ab": ips(n=16, seconds=0.2, label_selector={"zone": "in(a,b)"}),
    "camera": ips(resources={"camera": 1}),
    # SPREAD alternates the nodes: even instant tasks land on both.
    "spread": ips(n=4, scheduling_strategy="SPREAD"),
    "affinity_b": ips(scheduling_strategy=ag.NodeAffinity(by_zone["b"])),
    "soft_gone": ips(n=2, scheduling_strategy=ag.NodeAffinity(b"\\x01" * 16, soft=True)),
    "on_each_node": sorted(ag.run_on_each_node(my_ip, timeout=60).values()),
}
print(json.dumps(result), flush=True)
ag.shutdown()
"""


def test_labels_spread_and_affinity_across_three_hosts(hosts: Hosts) -> None:
    secret = os.urandom(32).hex()
    _, ip_a, ip_b = hosts.addresses
    _, address = hosts.start_head(HEAD_PORT, secret, PULSE_S)
    hosts.start_node(1, address, secret, PULSE_S, num_workers=2, labels={"zone": "a"})
    hosts.start_node(
        2, address, secret, PULSE_S, num_workers=2, labels={"zone": "b"}, resources={"camera": 1}
    )
    driver = hosts.run(0, textwrap.dedent(_DRIVER), address, secret, str(PULSE_S))
    result = read_json(driver, timeout=180)
    assert result["zone_a"] == [ip_a]
    assert result["not_a"] == [ip_b]
    assert result["in_ab"] == sorted([ip_a, ip_b])
    assert result["camera"] == [ip_b]
    assert result["spread"] == sorted([ip_a, ip_b])
    assert result["affinity_b"] == [ip_b]
    assert set(result["soft_gone"]) <= {ip_a, ip_b}
    assert result["on_each_node"] == sorted([ip_a, ip_b])
