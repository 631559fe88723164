"""actorgrid: a Ray-like distributed actor runtime for Python, built on Trio.

The public API is what this module exports; everything in underscored modules is private.

Only the exceptions are imported with the package. Every other public name is imported on
first use (PEP 562 ``__getattr__``), so ``import actorgrid`` is cheap and a worker process,
which imports the package before its own module, loads only what it runs: not the head, the
node agent, the dashboard, jobs or pools. Type checkers read the imports in the
``TYPE_CHECKING`` block, which list the same names as ``_LAZY``.
"""

import importlib as _importlib
import sys as _sys
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

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

if _TYPE_CHECKING:
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
    from ._runtime.inline import method as method
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


def _read_version() -> str:
    # importlib.metadata costs ~0.1 s to import: read on first use of __version__.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("actorgrid")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0+unknown"


if _TYPE_CHECKING:
    __version__: str

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
    "method",
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

# Public name -> the private module that defines it (imported on first use).
_LAZY: dict[str, str] = {
    "Cluster": "._node.cluster",
    "connect": "._node.cluster",
    "init": "._node.prestart",
    "is_initialized": "._node.cluster",
    "shutdown": "._node.cluster",
    "serve_dashboard": "._node.dashboard",
    "JobRun": "._node.jobclient",
    "Jobs": "._node.jobclient",
    "JobStatistics": "._node.jobclient",
    "TaskRecord": "._node.observing",
    "timeline": "._node.observing",
    "ActorStatistics": "._node.records",
    "ClusterStatus": "._node.records",
    "NodeStatistics": "._node.records",
    "TaskStatistics": "._node.records",
    "WorkerStatistics": "._node.records",
    "ClusterFile": "._node.standalone",
    "serve_head": "._node.standalone",
    "serve_node": "._node.standalone",
    "ActorPool": "._pool.actorpool",
    "Pool": "._pool.pool",
    "AsyncResult": "._pool.results",
    "IMapIterator": "._pool.results",
    "Availability": "._protocol.messages",
    "Event": "._protocol.messages",
    "ask": "._runtime.api",
    "ask_async": "._runtime.api",
    "cancel": "._runtime.api",
    "get": "._runtime.api",
    "get_actor": "._runtime.api",
    "get_actor_async": "._runtime.api",
    "get_async": "._runtime.api",
    "kill": "._runtime.api",
    "kill_async": "._runtime.api",
    "publish": "._runtime.api",
    "publish_async": "._runtime.api",
    "put": "._runtime.api",
    "send": "._runtime.api",
    "send_async": "._runtime.api",
    "wait": "._runtime.api",
    "wait_async": "._runtime.api",
    "Context": "._runtime.context",
    "Mailbox": "._runtime.context",
    "MailboxStatistics": "._runtime.context",
    "Request": "._runtime.context",
    "NodeAffinity": "._runtime.demands",
    "ObjectRefGenerator": "._runtime.generators",
    "ActorHandle": "._runtime.handles",
    "ActorMethod": "._runtime.handles",
    "get_gpu_ids": "._runtime.holdings",
    "method": "._runtime.inline",
    "NodeSubscription": "._runtime.oneach",
    "run_on_each_node": "._runtime.oneach",
    "run_on_each_worker": "._runtime.oneach",
    "ObjectRef": "._runtime.refs",
    "ActorClass": "._runtime.remote",
    "RemoteFunction": "._runtime.remote",
    "remote": "._runtime.decorator",
    "Subscription": "._runtime.subscriptions",
    "subscribe": "._runtime.subscriptions",
    "subscribe_async": "._runtime.subscriptions",
    "AgentKey": "._runtime.virtual",
    "RestartPolicy": "._scheduler.restart",
    "ListenLimits": "._transport.admission",
    "TLSConfig": "._transport.tls",
}


def _fixup_module_metadata() -> None:
    # Public objects say they live in `actorgrid`, as users import them (trio does the same).
    # Only names whose module is loaded are touched: loading one here would undo the laziness.
    namespace = globals()
    for name in __all__:
        obj = namespace.get(name)
        if obj is None:
            module = _sys.modules.get(__name__ + _LAZY[name])
            if module is None:
                continue
            obj = namespace[name] = getattr(module, name)
        if getattr(obj, "__module__", "").startswith("actorgrid."):
            try:
                obj.__module__ = "actorgrid"
            except (AttributeError, TypeError):
                pass


if not _TYPE_CHECKING:

    def __getattr__(name: str) -> _Any:
        if name == "__version__":
            version = globals()["__version__"] = _read_version()
            return version
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module 'actorgrid' has no attribute {name!r}")
        _importlib.import_module(module, __name__)
        # Everything the import brought in is fixed up now, not only `name`: an ObjectRef
        # made by `f.remote()` shows `actorgrid.ObjectRef` whether or not the user ever
        # wrote `ag.ObjectRef`.
        _fixup_module_metadata()
        return globals()[name]

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__})


_fixup_module_metadata()
