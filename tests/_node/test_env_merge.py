"""A call's ``.options(runtime_env=)`` merges with its driver's ``ag.init(runtime_env=)`` as in
Ray: each key the call gives replaces the driver's, ``env_vars`` merge name by name.

Real processes: an embedded cluster (one worker per environment) whose driver has an
environment of its own; the code lives only in temporary folders shipped to the workers.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import trio

import actorgrid as ag

GET_TIMEOUT_S = 90.0


def _folder(root: Path, name: str) -> tuple[Path, str]:
    folder = root / name
    folder.mkdir()
    module = f"merge_{name}_{uuid.uuid4().hex[:8]}"
    (folder / f"{module}.py").write_text(f"WHERE = {name!r}\n")
    return folder, module


@ag.remote
def look(module: str) -> dict[str, object]:
    import importlib

    try:
        where = importlib.import_module(module).WHERE
    except ImportError:
        where = None
    return {
        "where": where,
        "vars": {k: os.environ.get(k) for k in ("A", "B", "C")},
        "pid": os.getpid(),
    }


async def test_a_calls_runtime_env_merges_over_the_drivers(tmp_path: Path) -> None:
    one, mod_one = _folder(tmp_path, "one")
    two, mod_two = _folder(tmp_path, "two")
    driver_env = {"working_dir": str(one), "env_vars": {"A": "driver", "B": "driver"}}
    async with ag.connect(num_workers=1, runtime_env=driver_env):
        with trio.fail_after(GET_TIMEOUT_S):
            own = await look.remote(mod_one)
            more_vars = await look.options(
                runtime_env={"env_vars": {"B": "call", "C": "call"}}
            ).remote(mod_one)
            other_dir = await look.options(runtime_env={"working_dir": str(two)}).remote(mod_two)
            old_dir = await look.options(runtime_env={"working_dir": str(two)}).remote(mod_one)
    assert own == {**own, "where": "one", "vars": {"A": "driver", "B": "driver", "C": None}}
    # env_vars: merged name by name, the call's winning; working_dir: the driver's, kept.
    assert more_vars["where"] == "one"
    assert more_vars["vars"] == {"A": "driver", "B": "call", "C": "call"}
    assert more_vars["pid"] != own["pid"]  # another environment: another worker
    # working_dir: the call's replaces the driver's; the driver's env_vars are kept.
    assert other_dir["where"] == "two"
    assert other_dir["vars"] == {"A": "driver", "B": "driver", "C": None}
    assert old_dir["where"] is None  # the driver's folder is not there too
