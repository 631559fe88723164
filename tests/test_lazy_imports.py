"""``import actorgrid`` is cheap, and a worker process loads only what it runs.

Each check runs in a fresh interpreter (what is imported is per process), and asserts the
modules a user or a worker process would otherwise pay for at start-up.
"""

from __future__ import annotations

import json
import subprocess
import sys

# Modules that only a head, a node agent, a dashboard, jobs or pools need.
NOT_IN_A_WORKER = (
    "actorgrid._node.cluster",
    "actorgrid._node.head",
    "actorgrid._node.node",
    "actorgrid._dashboard.server",
    "actorgrid._node.jobclient",
    "actorgrid._pool.pool",
    "trio_websocket",
    "importlib.metadata",
)


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport json, sys; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_actorgrid_loads_only_its_exceptions() -> None:
    loaded = {m for m in _modules_after("import actorgrid") if m.startswith("actorgrid")}
    assert loaded == {"actorgrid", "actorgrid._exceptions"}, sorted(loaded)


def test_a_worker_process_does_not_load_the_head_node_or_dashboard() -> None:
    loaded = _modules_after("import actorgrid._node.worker")
    assert "actorgrid._runtime.core" in loaded  # the check looks at a real worker's imports
    assert not loaded & set(NOT_IN_A_WORKER), sorted(loaded & set(NOT_IN_A_WORKER))


def test_a_public_name_loads_on_first_use_and_says_it_is_actorgrid_s() -> None:
    # ag.remote loads the runtime, refs included: ObjectRef is fixed up then, before anyone
    # writes ag.ObjectRef (its reprs and pickles name actorgrid.ObjectRef either way).
    code = (
        "import actorgrid as ag\n"
        "ag.remote\n"
        "import actorgrid._runtime.refs as refs\n"
        "assert refs.ObjectRef.__module__ == 'actorgrid', refs.ObjectRef.__module__\n"
        "assert ag.ObjectRef is refs.ObjectRef\n"
        "assert 'ObjectRef' in dir(ag)\n"
        "assert ag.__version__\n"
    )
    _modules_after(code)
