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
    "psutil",  # a node agent's resource samples; a worker forked from the template lacks it
)

# Modules that only a worker runs: hosting actors and running calls.
NOT_IN_A_DRIVER = (
    "actorgrid._runtime.executor",
    "actorgrid._runtime.agenthost",
    "actorgrid._runtime.agentpools",
    "actorgrid._runtime.running",
)


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport json, sys; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_actorgrid_loads_only_its_exceptions() -> None:
    loaded = {m for m in _modules_after("import actorgrid") if m.startswith("actorgrid")}
    assert loaded == {"actorgrid", "actorgrid._exceptions"}, sorted(loaded)


def test_a_worker_process_does_not_load_the_head_node_or_dashboard() -> None:
    loaded = _modules_after("import actorgrid._node.worker")
    assert "actorgrid._runtime.core" in loaded  # the check looks at a real worker's imports
    assert not loaded & set(NOT_IN_A_WORKER), sorted(loaded & set(NOT_IN_A_WORKER))


def test_a_driver_with_an_embedded_cluster_does_not_load_what_only_workers_run() -> None:
    code = (
        "import actorgrid as ag\n"
        "@ag.remote\n"
        "def f(x: int) -> int:\n"
        "    return x\n"
        "with ag.init(num_workers=1):\n"
        "    assert ag.get(f.remote(1), timeout=60) == 1\n"
    )
    loaded = _modules_after(code)
    assert "actorgrid._node.node" in loaded  # the check looks at a real driver's imports
    assert not loaded & set(NOT_IN_A_DRIVER), sorted(loaded & set(NOT_IN_A_DRIVER))


def test_a_public_name_loads_on_first_use_and_says_it_is_actorgrid_s() -> None:
    # ag.get loads the runtime, refs included: ObjectRef is fixed up then, before anyone
    # writes ag.ObjectRef (its reprs and pickles name actorgrid.ObjectRef either way).
    code = (
        "import actorgrid as ag\n"
        "ag.get\n"
        "import actorgrid._runtime.refs as refs\n"
        "assert refs.ObjectRef.__module__ == 'actorgrid', refs.ObjectRef.__module__\n"
        "assert ag.ObjectRef is refs.ObjectRef\n"
        "assert 'ObjectRef' in dir(ag)\n"
        "assert ag.__version__\n"
    )
    _modules_after(code)


def test_decorating_with_ag_remote_imports_no_trio_and_no_runtime() -> None:
    # ag.init starts the worker template before it imports the runtime (_node/prestart.py):
    # a script's decorators, which run before it, must not import it.
    code = (
        "import actorgrid as ag\n"
        "@ag.remote\n"
        "def f(x: int) -> int:\n"
        "    return x\n"
        "@ag.remote(max_restarts=1)\n"
        "class C:\n"
        "    def m(self) -> int:\n"
        "        return 1\n"
        "assert f.__name__ == 'f' and C.__qualname__ == 'C'\n"
    )
    loaded = _modules_after(code)
    heavy = {m for m in loaded if m.split(".")[0] in ("trio", "attrs", "cattrs", "cloudpickle")}
    runtime = {m for m in loaded if m.startswith("actorgrid.")} - {
        "actorgrid._exceptions",
        "actorgrid._runtime",
        "actorgrid._runtime.decorator",
    }
    assert not heavy and not runtime, sorted(heavy | runtime)


def test_a_deferred_remote_becomes_the_real_one_on_first_use() -> None:
    # Every use a user makes of a decorated object before ag.init: isinstance, options,
    # pickling, a repr, from several threads at once; and a bad decoration fails at its
    # first use (each time), as it would have at once.
    code = (
        "import cloudpickle\n"
        "import actorgrid as ag\n"
        "@ag.remote\n"
        "def f(x: int) -> int:\n"
        "    return x\n"
        "@ag.remote\n"
        "class C:\n"
        "    def m(self) -> int:\n"
        "        return 1\n"
        "@ag.remote\n"
        "def h() -> None: ...\n"
        "@ag.remote(no_such_option=1)\n"
        "def bad() -> None: ...\n"
        "g = f\n"
        "assert isinstance(f, ag.RemoteFunction), type(f)\n"
        "assert repr(g) == '<remote function f>' and type(g) is ag.RemoteFunction\n"
        "assert f.options(num_cpus=2).__name__ == 'f'\n"
        "assert repr(C) == '<actor class C>' and isinstance(C, ag.ActorClass)\n"
        "assert type(cloudpickle.loads(cloudpickle.dumps(h))) is ag.RemoteFunction\n"
        "for _ in range(2):\n"
        "    try:\n"
        "        bad.remote()\n"
        "    except TypeError as exc:\n"
        "        assert 'no_such_option' in str(exc), exc\n"
        "    else:\n"
        "        raise AssertionError('an unknown option was accepted')\n"
        "import threading\n"
        "@ag.remote\n"
        "def t() -> None: ...\n"
        "errors = []\n"
        "def use() -> None:\n"
        "    try:\n"
        "        assert t.options(num_cpus=1).__name__ == 't'\n"
        "    except Exception as exc:\n"
        "        errors.append(exc)\n"
        "threads = [threading.Thread(target=use) for _ in range(8)]\n"
        "for thread in threads:\n"
        "    thread.start()\n"
        "for thread in threads:\n"
        "    thread.join()\n"
        "assert not errors and type(t) is ag.RemoteFunction, errors\n"
        "try:\n"
        "    ag.remote(3)\n"
        "except TypeError as exc:\n"
        "    assert 'functions and classes' in str(exc), exc\n"
        "else:\n"
        "    raise AssertionError('ag.remote(3) was accepted')\n"
    )
    _modules_after(code)
