"""A driver's runtime environment (``ag.init(runtime_env=...)``): pack, ship, make ready.

Packing runs off the loop; shipping is ``_runtime/envship.py``'s (shared with
``.options(runtime_env=...)``), and returns once every node's workers of the environment are
ready, so the driver's first task finds them. The driver's plain calls see only the workers of
its environment (``Runtime.env_key``), and its workers only each other: nothing of one
driver's environment reaches another driver's work.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import trio

from .._env.spec import PreparedEnv, from_environ, prepare
from .._runtime.core import Runtime
from .._runtime.envship import set_driver_env, ship_env, upload_package

__all__ = ["ensure_runtime_env", "prepare_runtime_env", "upload_package"]


async def prepare_runtime_env(runtime_env: Mapping[str, Any] | None) -> PreparedEnv | None:
    """The environment of ``runtime_env``, or of ``ACTORGRID_RUNTIME_ENV``, or None."""
    if runtime_env is None:
        runtime_env = from_environ()
    if runtime_env is None:
        return None
    return await trio.to_thread.run_sync(prepare, runtime_env)


async def ensure_runtime_env(rt: Runtime, prepared: PreparedEnv) -> None:
    await ship_env(rt, prepared)
    set_driver_env(rt, prepared)  # the parent of its calls' runtime_envs
