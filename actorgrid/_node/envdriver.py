"""A driver's runtime environment (``ag.init(runtime_env=...)``): pack, ship, make ready.

Packing runs off the loop. Each package goes to the head once (the head says which it has),
in chunks of ``PACKAGE_CHUNK_BYTES``; then ``EnsureEnv`` makes every node start workers of
the environment, and returns once they are ready, so the driver's first task finds them.
The driver sees only the workers of its environment (``Runtime.env_key``), and its workers
only each other: nothing of one driver's environment reaches another driver's work.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import trio

from .._env.packing import Package
from .._env.spec import PreparedEnv, from_environ, prepare
from .._exceptions import RuntimeEnvError
from .._protocol.envmessages import (
    PACKAGE_CHUNK_BYTES,
    EnsureEnv,
    PackageHave,
    PackagePut,
    PackageQuery,
)
from .._protocol.messages import Ack
from .._runtime.core import Runtime

__all__ = ["ensure_runtime_env", "prepare_runtime_env", "upload_package"]


async def prepare_runtime_env(runtime_env: Mapping[str, Any] | None) -> PreparedEnv | None:
    """The environment of ``runtime_env``, or of ``ACTORGRID_RUNTIME_ENV``, or None."""
    if runtime_env is None:
        runtime_env = from_environ()
    if runtime_env is None:
        return None
    return await trio.to_thread.run_sync(prepare, runtime_env)


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


async def ensure_runtime_env(rt: Runtime, prepared: PreparedEnv) -> None:
    for package in prepared.packages.values():
        await upload_package(rt, package)
    spec = prepared.spec
    reply = await rt.head_request(lambda rid: EnsureEnv(rid, spec))
    if isinstance(reply, Ack) and reply.error:
        raise RuntimeEnvError(
            f"the runtime_env ({spec.label}) could not be made ready:\n{reply.error}"
        )
