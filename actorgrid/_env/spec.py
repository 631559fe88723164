"""A user's ``runtime_env`` dict, checked, packed and named.

``prepare(runtime_env)`` returns a :class:`PreparedEnv`: the wire's ``RuntimeEnvSpec`` (whose
``key`` is the sha256 of everything in it, so equal environments share workers and different
ones never do) and the packages it names, by digest. Keys it accepts (Ray's names)::

    working_dir   a local folder: shipped, the workers' current directory, importable
    py_modules    folders (packages) or imported modules: shipped, importable
    env_vars      {name: value} set in the workers' environment
    excludes      .gitignore-style patterns left out of working_dir and py_modules folders
    worker_setup  a callable run once in each worker before its first task
    node_setup    a callable run once on each node before its workers start
    node_cleanup  a callable run once on each node when the environment is released

An unknown key, or a value of the wrong type, is a RuntimeEnvError that lists what is
accepted.

``merge(parent, child)`` is Ray's rule for a call's ``.options(runtime_env=)`` under a
driver's ``ag.init(runtime_env=)``: each key the child gives replaces the parent's, except
``env_vars``, merged name by name (the child's value wins). Reading ``ACTORGRID_RUNTIME_ENV`` (JSON; ``actorgrid submit`` sets it for its job)
gives the default of ``ag.init(runtime_env=)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import cloudpickle

from .._exceptions import RuntimeEnvError
from .._protocol.envmessages import RuntimeEnvSpec
from .packing import Package, pack_file, pack_folder

__all__ = ["ENVIRON_VAR", "KNOWN_KEYS", "PreparedEnv", "from_environ", "merge", "prepare"]

ENVIRON_VAR = "ACTORGRID_RUNTIME_ENV"
KNOWN_KEYS = (
    "working_dir",
    "py_modules",
    "env_vars",
    "excludes",
    "worker_setup",
    "node_setup",
    "node_cleanup",
)
_HOOKS = ("worker_setup", "node_setup", "node_cleanup")


class PreparedEnv:
    """A runtime environment ready to ship: its spec and the packages it names."""

    __slots__ = ("given", "packages", "spec")

    def __init__(
        self,
        spec: RuntimeEnvSpec,
        packages: dict[str, Package],
        given: frozenset[str] = frozenset(KNOWN_KEYS),
    ) -> None:
        self.spec = spec
        self.packages = packages
        self.given = given  # the keys the user gave (a merge keeps the parent's others)

    def __repr__(self) -> str:
        return f"<PreparedEnv {self.spec.key[:12]} {self.spec.label}>"


def from_environ() -> dict[str, Any] | None:
    """The runtime_env that ``ACTORGRID_RUNTIME_ENV`` names (JSON), or None."""
    raw = os.environ.get(ENVIRON_VAR)
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise RuntimeEnvError(
            f"{ENVIRON_VAR} must be a JSON object such as "
            f'{{"working_dir": "."}}, not {raw[:80]!r}; fix or unset it'
        )
    return value


def prepare(runtime_env: Mapping[str, Any]) -> PreparedEnv:
    if not isinstance(runtime_env, Mapping):
        raise RuntimeEnvError(
            f"runtime_env must be a dict such as {{'working_dir': '.'}}, not "
            f"{type(runtime_env).__name__}"
        )
    unknown = sorted(set(runtime_env) - set(KNOWN_KEYS))
    if unknown:
        raise RuntimeEnvError(
            f"runtime_env has unknown key(s) {', '.join(map(repr, unknown))}; the keys "
            f"actorgrid accepts are {', '.join(KNOWN_KEYS)}"
        )
    excludes = _strings(runtime_env.get("excludes", ()), "excludes")
    packages: dict[str, Package] = {}
    working_dir = ""
    if runtime_env.get("working_dir") is not None:
        package = pack_folder(_path(runtime_env["working_dir"], "working_dir"), excludes)
        packages[package.digest] = package
        working_dir = package.digest
    modules: list[str] = []
    for entry in runtime_env.get("py_modules") or ():
        package = _pack_module(entry, excludes)
        packages[package.digest] = package
        modules.append(package.digest)
    env_vars = runtime_env.get("env_vars") or {}
    if not isinstance(env_vars, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()
    ):
        raise RuntimeEnvError(
            "runtime_env env_vars must be a dict of strings to strings, such as "
            '{"OMP_NUM_THREADS": "1"}; convert numbers with str()'
        )
    hooks: dict[str, bytes | None] = {}
    for name in _HOOKS:
        fn = runtime_env.get(name)
        if fn is not None and not callable(fn):
            raise RuntimeEnvError(
                f"runtime_env {name} must be a callable taking no arguments, not {fn!r}"
            )
        hooks[name] = None if fn is None else _pickle_hook(fn, name)
    spec = _spec(
        working_dir,
        tuple(modules),
        tuple(sorted(env_vars.items())),
        (hooks["worker_setup"], hooks["node_setup"], hooks["node_cleanup"]),
        _label(runtime_env),
    )
    given = frozenset(k for k, v in runtime_env.items() if v is not None)
    return PreparedEnv(spec, packages, given)


def _spec(
    working_dir: str,
    modules: tuple[str, ...],
    env_vars: tuple[tuple[str, str], ...],
    hooks: tuple[bytes | None, bytes | None, bytes | None],
    label: str,
) -> RuntimeEnvSpec:
    body = (working_dir, modules, env_vars, *hooks)
    key = hashlib.sha256(repr(body).encode()).hexdigest()[:32]
    return RuntimeEnvSpec(key, working_dir, modules, env_vars, *hooks, label=label)


def merge(parent: PreparedEnv, child: PreparedEnv) -> PreparedEnv:
    """``child`` (a call's runtime_env) over ``parent`` (its driver's), as Ray merges them:
    each key ``child`` gives wins; ``env_vars`` are merged name by name, ``child``'s winning."""
    p, c, given = parent.spec, child.spec, child.given

    def pick(name: str, mine: Any, theirs: Any) -> Any:
        return mine if name in given else theirs

    env_vars = dict(p.env_vars)
    env_vars.update(c.env_vars)
    hooks = (
        pick("worker_setup", c.worker_setup, p.worker_setup),
        pick("node_setup", c.node_setup, p.node_setup),
        pick("node_cleanup", c.node_cleanup, p.node_cleanup),
    )
    spec = _spec(
        pick("working_dir", c.working_dir, p.working_dir),
        pick("py_modules", c.py_modules, p.py_modules),
        tuple(sorted(env_vars.items())),
        hooks,
        f"{c.label} over ag.init's {p.label}",
    )
    if spec.key == p.key:
        return parent  # the call asks for nothing its driver's environment lacks
    packages = {**parent.packages, **child.packages}
    used = {spec.working_dir, *spec.py_modules}
    return PreparedEnv(
        spec, {d: pk for d, pk in packages.items() if d in used}, parent.given | given
    )


def _path(value: Any, what: str) -> str:
    if not isinstance(value, str | os.PathLike):
        raise RuntimeEnvError(f"runtime_env {what} must be a folder path, not {value!r}")
    return os.fspath(value)


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise RuntimeEnvError(
            f'runtime_env {what} must be a list of patterns such as ["*.log", "data/"]'
        )
    return tuple(value)


def _pack_module(entry: Any, excludes: tuple[str, ...]) -> Package:
    if isinstance(entry, types.ModuleType):
        file = getattr(entry, "__file__", None)
        if file is None:
            raise RuntimeEnvError(
                f"runtime_env py_modules: module {entry.__name__} has no file to ship (a "
                "namespace package or a built-in); give its folder instead"
            )
        path = Path(file)
        if path.name == "__init__.py":
            return pack_folder(path.parent, excludes, prefix=path.parent.name, what="py_modules")
        return pack_file(path)
    folder = Path(_path(entry, "py_modules"))
    if folder.is_file() and folder.suffix == ".py":
        return pack_file(folder)
    return pack_folder(folder, excludes, prefix=folder.resolve().name, what="py_modules")


def _pickle_hook(fn: Callable[[], Any], name: str) -> bytes:
    try:
        return bytes(cloudpickle.dumps(fn))
    except Exception as exc:
        raise RuntimeEnvError(
            f"runtime_env {name} {fn!r} could not be pickled ({exc}); use a module-level "
            "function, or one that captures only picklable values"
        ) from exc


def _label(runtime_env: Mapping[str, Any]) -> str:
    parts = []
    if runtime_env.get("working_dir") is not None:
        parts.append(f"working_dir={os.fspath(runtime_env['working_dir'])!r}")
    if runtime_env.get("py_modules"):
        parts.append(f"py_modules={len(runtime_env['py_modules'])}")
    if runtime_env.get("env_vars"):
        parts.append(f"env_vars={sorted(runtime_env['env_vars'])}")
    parts.extend(h for h in _HOOKS if runtime_env.get(h) is not None)
    return ", ".join(parts) or "(empty)"
