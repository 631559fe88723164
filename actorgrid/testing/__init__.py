"""Public helpers for testing code that uses actorgrid.

``simulate(main, seed=...)`` runs a whole cluster (head, nodes, workers, the driver ``main``)
in one ``trio.run`` on a virtual clock, over an in-memory network, with faults on demand;
the same seed gives the same run, down to the hash of every message delivered.
"""

from ._faults import DelayLink as DelayLink
from ._faults import DropLink as DropLink
from ._faults import Fault as Fault
from ._faults import KillWorker as KillWorker
from ._faults import PartitionNode as PartitionNode
from ._faults import random_faults as random_faults
from ._faults import worker_host as worker_host
from ._simulate import Sim as Sim
from ._simulate import SimResult as SimResult
from ._simulate import TraceEntry as TraceEntry
from ._simulate import current_host as current_host
from ._simulate import simulate as simulate

__all__ = [
    "DelayLink",
    "DropLink",
    "Fault",
    "KillWorker",
    "PartitionNode",
    "Sim",
    "SimResult",
    "TraceEntry",
    "current_host",
    "random_faults",
    "simulate",
    "worker_host",
]
