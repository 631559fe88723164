"""Runtime environments from a process's side: ship one, make it ready, use it per call.

``ship_env`` uploads each package of an environment to the head once (the head says which it
has), in chunks of ``PACKAGE_CHUNK_BYTES``, then asks the head to make the environment ready
on every node (``EnsureEnv``) and returns once its workers are: ``ag.init(runtime_env=)``
does this before the driver's first call.

``use_env`` is ``.options(runtime_env=...)``: the first call of an environment in a process
starts ``ship_env`` in the background and lets that environment's workers into the process's
placement (``Runtime.use_env_workers``); the call, with its env in its ``Demand``, waits for
one of them like any call waits for a worker, and goes to the first that joins. Later calls
of the environment cost what any call costs. An environment that cannot be made ready fails
the calls that wait for it with the reason (naming the node and what failed there); the next
call of it tries again. The head counts this process among the environment's users: its
workers stop when the last process using it leaves.

A driver's own environment (``ag.init(runtime_env=)``, ``set_driver_env``) is the parent of
its calls' ones: ``for_call`` gives a call's environment merged over it (``_env/spec.merge``,
Ray's rule), made once per environment the calls name.

A head that restarts knows no environment: each process ships the ones it uses again when it
reconnects (``remember``), in the background, so the new head has their packages for nodes
that join later and counts their users again.
"""

from __future__ import annotations

import functools
import logging
import weakref

from .._env.packing import Package
from .._env.spec import PreparedEnv, merge
from .._exceptions import RuntimeEnvError
from .._protocol.envmessages import (
    PACKAGE_CHUNK_BYTES,
    EnsureEnv,
    PackageHave,
    PackagePut,
    PackageQuery,
)
from .._protocol.messages import Ack
from .core import Runtime
from .peer import Peer

__all__ = ["for_call", "remember", "set_driver_env", "ship_env", "upload_package", "use_env"]

log = logging.getLogger("actorgrid.runtime")

# The environments each process uses, by key: shipped again to a head it reconnects to.
_USED: weakref.WeakKeyDictionary[Runtime, dict[str, PreparedEnv]] = weakref.WeakKeyDictionary()
# A driver's own environment, and the merges of its calls' environments over it, by the key
# of what the call named.
_DRIVER: weakref.WeakKeyDictionary[Runtime, tuple[PreparedEnv, dict[str, PreparedEnv]]] = (
    weakref.WeakKeyDictionary()
)


def set_driver_env(rt: Runtime, prepared: PreparedEnv) -> None:
    """``rt`` is a driver of ``prepared`` (``ag.init(runtime_env=)``)."""
    _DRIVER[rt] = (prepared, {})


def for_call(rt: Runtime, env: PreparedEnv) -> PreparedEnv:
    """The environment a call of ``rt`` that names ``env`` runs in: ``env`` over its driver's
    own (``env`` itself in a process without one). O(1) after the first call naming ``env``."""
    driver = _DRIVER.get(rt)
    if driver is None:
        return env
    parent, merged = driver
    found = merged.get(env.spec.key)
    if found is None:
        found = merged[env.spec.key] = merge(parent, env)
    return found


async def upload_package(rt: Runtime, package: Package) -> None:
    digest = package.digest
    have = await rt.head_request(lambda rid: PackageQuery(rid, digest))
    if isinstance(have, PackageHave) and have.size >= 0:
        return
    data = package.data
    offset = 0
    while True:
        chunk = data[offset : offset + PACKAGE_CHUNK_BYTES]
        last = offset + len(chunk) >= len(data)
        put = functools.partial(PackagePut, digest=digest, offset=offset, data=chunk, last=last)
        reply = await rt.head_request(put)
        if isinstance(reply, Ack) and reply.error:
            raise RuntimeEnvError(
                f"shipping {package.source!r} to the cluster's head failed: {reply.error}"
            )
        if last:
            return
        offset += len(chunk)


async def ship_env(rt: Runtime, prepared: PreparedEnv) -> None:
    for package in prepared.packages.values():
        await upload_package(rt, package)
    spec = prepared.spec
    reply = await rt.head_request(lambda rid: EnsureEnv(rid, spec))
    if isinstance(reply, Ack) and reply.error:
        raise RuntimeEnvError(
            f"the runtime_env ({spec.label}) could not be made ready:\n{reply.error}"
        )


def use_env(rt: Runtime, prepared: PreparedEnv) -> None:
    """Loop: a call of this process asks for ``prepared``: make it ready, once."""
    key = prepared.spec.key
    if key == rt.env_key or key in rt.envs_used:
        return
    rt.waiting.env_errors.pop(key, None)
    rt.use_env_workers(key)
    remember(rt, prepared)
    rt.nursery.start_soon(_ship_in_background, rt, prepared)


async def _ship_in_background(rt: Runtime, prepared: PreparedEnv) -> None:
    key = prepared.spec.key
    try:
        await ship_env(rt, prepared)
    except Exception as exc:
        rt.envs_used.discard(key)  # the next call of it tries again
        rt.waiting.fail_env(key, str(exc))


def remember(rt: Runtime, prepared: PreparedEnv) -> None:
    """``rt`` uses ``prepared``: ship it again to each head it reconnects to."""
    used = _USED.get(rt)
    if used is None:
        used = _USED[rt] = {}
        if rt.headlink is not None:
            rt.headlink.on_reconnected.append(functools.partial(_reship_soon, rt))
    used[prepared.spec.key] = prepared


async def _reship_soon(rt: Runtime, head: Peer) -> None:
    # In the background: requests wait until the new link is up, after these reports.
    rt.nursery.start_soon(_reship, rt)


async def _reship(rt: Runtime) -> None:
    for prepared in list(_USED.get(rt, {}).values()):
        try:
            await ship_env(rt, prepared)
        except Exception as exc:
            # Nodes may not have rejoined yet: the head has the environment all the same,
            # and makes it ready on each node as it joins.
            log.info("shipping runtime_env %s to the new head: %s", prepared.spec.label, exc)
