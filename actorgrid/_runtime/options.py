"""What a remote function or actor class is made of: its options (``.options()``,
``@ag.remote(...)``), its code as shipped to workers, and whether it is a coroutine actor."""

from __future__ import annotations

import hashlib
import inspect
import typing
from collections.abc import Callable
from typing import Any

import attrs

from .._env.spec import PreparedEnv, prepare
from .._scheduler.demand import Demand, cpus
from .._scheduler.streams import check_backpressure
from .context import Context
from .demands import check_placement_options, demand_of
from .serialization import dumps_code

__all__ = ["Options"]


@attrs.frozen
class Options:
    """What ``.options()`` and ``@ag.remote(...)`` accept."""

    name: str | None = None
    namespace: str | None = None
    get_if_exists: bool = False
    num_cpus: float | None = None
    max_concurrency: int = 0
    mailbox_size: int = 0
    max_restarts: int = 0
    max_task_retries: int = 0
    max_retries: int = 3
    retry_exceptions: bool | tuple[type[BaseException], ...] = False
    # None: the actor ends with the process that created it; "detached": it outlives it.
    lifetime: str | None = None
    # Keyed agents (kind.key(k)): seconds without a message before one is deactivated.
    idle_timeout: float | None = None
    # Remote generators: items the producer may run ahead of its consumer (0: the default).
    generator_backpressure: int = 0
    # Placement (``_runtime/demands.py``): held resources, where it may run.
    num_gpus: float | None = None
    memory: float | None = None
    resources: dict[str, float] | None = None
    label_selector: dict[str, str] | None = None
    scheduling_strategy: Any = None  # "DEFAULT", "SPREAD" or an ag.NodeAffinity
    # ``runtime_env={...}``, packed at .options() (``envship.py``): its own env's workers.
    runtime_env: PreparedEnv | None = None

    def demand(self, num_cpus: float) -> Demand:
        """What a call with these options asks of its worker."""
        if (
            self.num_gpus is None
            and self.memory is None
            and self.resources is None
            and self.label_selector is None
            and self.scheduling_strategy is None
            and self.runtime_env is None
        ):
            return cpus(num_cpus)  # interned: no work per call
        return demand_of(
            num_cpus,
            self.num_gpus,
            self.memory,
            self.resources,
            self.label_selector,
            self.scheduling_strategy,
            "" if self.runtime_env is None else self.runtime_env.spec.key,
        )

    def merge(self, **changes: Any) -> Options:
        if changes.keys() <= _NAMING:
            # ``.options(name=f"agent-{i}")`` per agent of 100,000: the rest was checked
            # when this was made; a generated copy by slot costs a quarter of evolve()'s.
            name = changes.get("name", self.name)
            if name is not None and not (isinstance(name, str) and name):
                raise ValueError(f"name must be a non-empty string, not {name!r}")
            return _renamed(
                self,
                name,
                changes.get("namespace", self.namespace),
                changes.get("get_if_exists", self.get_if_exists),
            )
        env = changes.get("runtime_env")
        if env == {}:
            changes["runtime_env"] = None  # no environment of its own, as in Ray
        elif env is not None and not isinstance(env, PreparedEnv):
            changes["runtime_env"] = prepare(env)  # packed once, here: RuntimeEnvError now
        unknown = set(changes) - set(attrs.fields_dict(Options))
        if unknown:
            raise TypeError(
                f"unknown option(s) {', '.join(sorted(unknown))}; valid options are "
                + ", ".join(attrs.fields_dict(Options))
            )
        if isinstance(changes.get("retry_exceptions"), list):
            changes["retry_exceptions"] = tuple(changes["retry_exceptions"])
        merged = attrs.evolve(self, **changes)
        for field in ("max_restarts", "max_retries", "max_task_retries"):
            value = getattr(merged, field)
            if not isinstance(value, int) or value < -1:
                raise ValueError(f"{field} must be an int >= -1 (-1: without limit), not {value!r}")
        retry = merged.retry_exceptions
        if not isinstance(retry, bool) and not (
            isinstance(retry, tuple)
            and all(isinstance(t, type) and issubclass(t, BaseException) for t in retry)
        ):
            raise TypeError(
                f"retry_exceptions must be True, False or a list of exception types, not {retry!r}"
            )
        size = merged.mailbox_size
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(
                f"mailbox_size must be an int >= 1 (0: the default, 1024), not {size!r}"
            )
        idle = merged.idle_timeout
        if idle is not None and (not isinstance(idle, int | float) or idle <= 0):
            raise ValueError(
                f"idle_timeout must be a number of seconds > 0 (None: never), not {idle!r}"
            )
        if merged.num_cpus is not None and merged.num_cpus < 0:
            raise ValueError(f"num_cpus must be >= 0, not {merged.num_cpus}")
        check_placement_options(
            merged.num_gpus,
            merged.memory,
            merged.resources,
            merged.label_selector,
            merged.scheduling_strategy,
        )
        if merged.lifetime not in (None, "detached", "non_detached"):
            raise ValueError(
                f"lifetime must be 'detached' (the actor outlives its creator, until ag.kill "
                f"or cluster stop) or None (it ends with its creator), not {merged.lifetime!r}"
            )
        check_backpressure(merged.generator_backpressure)
        if merged.name is not None and not (isinstance(merged.name, str) and merged.name):
            raise ValueError(f"name must be a non-empty string, not {merged.name!r}")
        return merged


# The options a named agent's own ``.options()`` sets.
_NAMING = frozenset({"name", "namespace", "get_if_exists"})


def _make_renamed() -> Callable[[Options, str | None, str | None, bool], Options]:
    """``_renamed(options, name, namespace, get_if_exists)``: a copy with those three set,
    written out field by field through the slots (no loop, no dict per call)."""
    fields = [field.name for field in attrs.fields(Options)]
    scope: dict[str, Any] = {"_new": object.__new__, "_Options": Options}
    lines = ["def _renamed(self, name, namespace, get_if_exists):", "    o = _new(_Options)"]
    for field in fields:
        scope[f"_set_{field}"] = Options.__dict__[field].__set__
        value = field if field in _NAMING else f"self.{field}"
        lines.append(f"    _set_{field}(o, {value})")
    lines.append("    return o")
    exec("\n".join(lines), scope)  # generated from Options' own field names only
    return scope["_renamed"]  # type: ignore[no-any-return]


_renamed = _make_renamed()


class _Code:
    """A function or class shipped to workers: pickled once, identified by its bytes."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj
        self._blob: bytes | None = None
        self._id: bytes | None = None
        # One bound method for every call: each call's record keeps ``blob`` (to send the
        # code again), and a fresh bound method per ``.remote()`` cost 64 bytes an agent.
        self.blob: Callable[[], bytes] = self._pickled

    def _pickled(self) -> bytes:
        if self._blob is None:
            self._blob = dumps_code(self.obj)
        return self._blob

    @property
    def id(self) -> bytes:
        if self._id is None:
            self._id = hashlib.blake2b(self.blob(), digest_size=16).digest()
        return self._id

    def __getstate__(self) -> Any:
        return {"obj": self.obj}

    def __setstate__(self, state: Any) -> None:
        self.__init__(state["obj"])  # type: ignore[misc]


def _takes_context(fn: Callable[..., Any]) -> bool:
    """True if the first parameter is annotated ag.Context (string annotations too)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    if not params:
        return False
    annotation = params[0].annotation
    if annotation is Context:
        return True
    if isinstance(annotation, str):
        try:
            hints = typing.get_type_hints(fn)
        except Exception:
            return annotation.split(".")[-1] == "Context"
        return hints.get(params[0].name) is Context
    return False
