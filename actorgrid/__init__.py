"""actorgrid: a Ray-like distributed actor runtime for Python, built on Trio.

The public API is what this module exports; everything in underscored modules is private.
"""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from ._exceptions import ActorDiedError as ActorDiedError
from ._exceptions import ActorgridError as ActorgridError
from ._exceptions import AuthenticationError as AuthenticationError
from ._exceptions import GetTimeoutError as GetTimeoutError
from ._exceptions import NameNotFoundError as NameNotFoundError
from ._exceptions import NotInitializedError as NotInitializedError
from ._exceptions import NoWorkerError as NoWorkerError
from ._exceptions import ObjectLostError as ObjectLostError
from ._exceptions import ProtocolError as ProtocolError
from ._exceptions import RemoteError as RemoteError
from ._exceptions import RuntimeEnvError as RuntimeEnvError
from ._exceptions import SerializationError as SerializationError
from ._exceptions import TaskCancelledError as TaskCancelledError
from ._exceptions import WorkerDiedError as WorkerDiedError
from ._node.cluster import Cluster as Cluster
from ._node.cluster import connect as connect
from ._node.cluster import init as init
from ._node.cluster import is_initialized as is_initialized
from ._node.cluster import shutdown as shutdown
from ._node.dashboard import serve_dashboard as serve_dashboard
from ._node.jobclient import JobRun as JobRun
from ._node.jobclient import Jobs as Jobs
from ._node.jobclient import JobStatistics as JobStatistics
from ._node.observing import TaskRecord as TaskRecord
from ._node.observing import timeline as timeline
from ._node.records import ActorStatistics as ActorStatistics
from ._node.records import ClusterStatus as ClusterStatus
from ._node.records import NodeStatistics as NodeStatistics
from ._node.records import TaskStatistics as TaskStatistics
from ._node.records import WorkerStatistics as WorkerStatistics
from ._node.standalone import ClusterFile as ClusterFile
from ._node.standalone import serve_head as serve_head
from ._node.standalone import serve_node as serve_node
from ._pool.actorpool import ActorPool as ActorPool
from ._pool.pool import Pool as Pool
from ._pool.results import AsyncResult as AsyncResult
from ._pool.results import IMapIterator as IMapIterator
from ._protocol.messages import Availability as Availability
from ._protocol.messages import Event as Event
from ._runtime.api import ask as ask
from ._runtime.api import ask_async as ask_async
from ._runtime.api import cancel as cancel
from ._runtime.api import get as get
from ._runtime.api import get_actor as get_actor
from ._runtime.api import get_actor_async as get_actor_async
from ._runtime.api import get_async as get_async
from ._runtime.api import kill as kill
from ._runtime.api import kill_async as kill_async
from ._runtime.api import publish as publish
from ._runtime.api import publish_async as publish_async
from ._runtime.api import put as put
from ._runtime.api import send as send
from ._runtime.api import send_async as send_async
from ._runtime.api import wait as wait
from ._runtime.api import wait_async as wait_async
from ._runtime.context import Context as Context
from ._runtime.context import Mailbox as Mailbox
from ._runtime.context import MailboxStatistics as MailboxStatistics
from ._runtime.context import Request as Request
from ._runtime.demands import NodeAffinity as NodeAffinity
from ._runtime.generators import ObjectRefGenerator as ObjectRefGenerator
from ._runtime.handles import ActorHandle as ActorHandle
from ._runtime.handles import ActorMethod as ActorMethod
from ._runtime.holdings import get_gpu_ids as get_gpu_ids
from ._runtime.oneach import NodeSubscription as NodeSubscription
from ._runtime.oneach import run_on_each_node as run_on_each_node
from ._runtime.oneach import run_on_each_worker as run_on_each_worker
from ._runtime.refs import ObjectRef as ObjectRef
from ._runtime.remote import ActorClass as ActorClass
from ._runtime.remote import RemoteFunction as RemoteFunction
from ._runtime.remote import remote as remote
from ._runtime.subscriptions import Subscription as Subscription
from ._runtime.subscriptions import subscribe as subscribe
from ._runtime.subscriptions import subscribe_async as subscribe_async
from ._runtime.virtual import AgentKey as AgentKey
from ._scheduler.restart import RestartPolicy as RestartPolicy
from ._transport.admission import ListenLimits as ListenLimits
from ._transport.tls import TLSConfig as TLSConfig

try:
    __version__ = _version("actorgrid")
except _PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "ActorClass",
    "ActorDiedError",
    "ActorHandle",
    "ActorMethod",
    "ActorPool",
    "ActorStatistics",
    "ActorgridError",
    "AgentKey",
    "AsyncResult",
    "AuthenticationError",
    "Availability",
    "Cluster",
    "ClusterFile",
    "ClusterStatus",
    "Context",
    "Event",
    "GetTimeoutError",
    "IMapIterator",
    "JobRun",
    "JobStatistics",
    "Jobs",
    "ListenLimits",
    "Mailbox",
    "MailboxStatistics",
    "NameNotFoundError",
    "NoWorkerError",
    "NodeAffinity",
    "NodeStatistics",
    "NodeSubscription",
    "NotInitializedError",
    "ObjectLostError",
    "ObjectRef",
    "ObjectRefGenerator",
    "Pool",
    "ProtocolError",
    "RemoteError",
    "RemoteFunction",
    "Request",
    "RestartPolicy",
    "RuntimeEnvError",
    "SerializationError",
    "Subscription",
    "TLSConfig",
    "TaskCancelledError",
    "TaskRecord",
    "TaskStatistics",
    "WorkerDiedError",
    "WorkerStatistics",
    "ask",
    "ask_async",
    "cancel",
    "connect",
    "get",
    "get_actor",
    "get_actor_async",
    "get_async",
    "get_gpu_ids",
    "init",
    "is_initialized",
    "kill",
    "kill_async",
    "publish",
    "publish_async",
    "put",
    "remote",
    "run_on_each_node",
    "run_on_each_worker",
    "send",
    "send_async",
    "serve_dashboard",
    "serve_head",
    "serve_node",
    "shutdown",
    "subscribe",
    "subscribe_async",
    "timeline",
    "wait",
    "wait_async",
]


def _fixup_module_metadata() -> None:
    # Public objects say they live in `actorgrid`, as users import them (trio does the same).
    for name in __all__:
        obj = globals()[name]
        if getattr(obj, "__module__", "").startswith("actorgrid."):
            try:
                obj.__module__ = "actorgrid"
            except (AttributeError, TypeError):
                pass


_fixup_module_metadata()
del _fixup_module_metadata
