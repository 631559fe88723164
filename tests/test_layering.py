"""Imports only go downward.

Layers, lowest first (the same order as the docstring of ``actorgrid/_protocol/__init__.py``)::

    actorgrid._exceptions    the exception tree
    actorgrid._protocol      messages, codec, framing, handshake   no I/O: no trio, no sockets
    actorgrid._transport     bytes in, bytes out
    actorgrid._scheduler     pure state machines                    no I/O: no trio, no sockets
    actorgrid._env           runtime_env packing and specs          no trio, no sockets
    actorgrid._runtime       per-process core
    actorgrid._dashboard     HTTP + WebSocket live view, /metrics   given a source by _node
    actorgrid._node          head, node agent, worker process
    actorgrid._pool          ag.Pool and ag.ActorPool, over tasks and actors
    actorgrid, .testing      the public API (package __init__) and public test helpers
    actorgrid.cli            the command line (source in cli/): public API only

A module may import from its own layer and the layers below it, never from a layer above;
``if TYPE_CHECKING:`` imports count too. Relative imports are resolved to absolute names
first. A new private package or module (``actorgrid/_something``) must be given a layer in
``LAYERS`` below before this test passes.

Inside ``actorgrid._runtime`` the modules are ordered too (``RUNTIME_ORDER``), lowest first; a
module imports only modules of a lower row, never one of its own row or above, so no import
circle can form inside the package (``if TYPE_CHECKING:`` and function-level imports count)::

    stepping          a task a link's reader woke, stepped in the reader's turn
    segments gcpause heaptrim   this process's side of its node's object store (shared
                      memory); the collector's freezes and thaws; giving freed heap back
    serialization signatures interrupt lineage restarts current blocking pulse demands holdings
                      starting inbox parking gcyoung confirms (fire-and-forget calls and
                      messages counted until their worker confirms them)
    quiet             calls whose ref was dropped: no answer, an error reported
    refs              ObjectRef, ObjectEntry; reach the runtime through current.py
    generators        ObjectRefGenerator, a remote generator's stream for its consumer
    handles           ActorHandle; likewise
    records           what the runtime keeps of its calls and actors
    lending           a link's reads lent to the thread that waits for its answers on it
    peer restartwait  one link; asks and sends by name waiting for a restarting actor
    portal headlink   thread hops; the link to the head
    seams             a runtime's network and threads (TCP and a pool; a simulation's own)
    getting waiting refcounting   ag.get / ag.wait; calls that wait for a worker; reference
                      counting's I/O shell
    membership        the workers a runtime may place calls on (the head's news)
    relinking         dropped links to live workers, redialled before the worker counts as dead
    links             Runtime, layer by layer: state, lifecycle, links, events
    stored            values in node stores: pulls, frees, lineage rebuilds
    objects           put, fetch, get
    tasks             submission, retries, results, cancels
    following         calls followed to restarted actors owned elsewhere; coroutine restarts
    actors            owned actors and their restarts
    claims            name claims at the head, one by one or batched; the creations they grant
    names             names, lookup, kill, send, ask
    core              Runtime, current_runtime
    virtual           keyed agent targets (kind.key(k)) and topic publish: the sending side
    context           a coroutine actor's Context
    keyed             keyed agents' activations and topic fan-out: the worker side
    producing         a remote generator's producer: window, items
    lanes             the executor's work items and queues
    cancelling        TaskCancels: cancelling and interrupting a worker's tasks and calls
    running inline    ExecutorTasks: tasks, cancel, interrupt; @ag.method(inline=True) calls
    agentruns         a coroutine agent's run: what is kept of it between its tasks
    agentstops        AgentStops: how a stopping worker's coroutine agents end
    agentpools        AgentPools: the steppers and resumers that carry parking agents
    agenthost         AgentHost: coroutine agents' runs and same-worker sends
    executor          Executor: hosting actors
    options           what a remote function or class is made of: options, code
    remote api        @ag.remote and the module-level API
    oneach subscriptions   ag.run_on_each_node / run_on_each_worker; ag.subscribe (a
                      driver's topic subscription, through a relay agent): over remote and api

A lower module that needs something of a higher one states it as a Protocol next to itself
(``refs.RefOwner``, ``handles.CallerRuntime``, ``links.HostedExecutor``, ``pulse.Pulsed``).
A new module in ``_runtime`` must be given its row here before this test passes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# (layer, module prefixes it owns), lowest first. The bare "actorgrid" prefix owns the
# package __init__ and its public attributes (``from actorgrid import remote``), not private
# modules: ``actorgrid._new`` belongs to no layer until it is listed here.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("_exceptions", ("actorgrid._exceptions",)),
    ("_protocol", ("actorgrid._protocol",)),
    ("_transport", ("actorgrid._transport",)),
    ("_scheduler", ("actorgrid._scheduler",)),
    ("_env", ("actorgrid._env",)),
    ("_runtime", ("actorgrid._runtime",)),
    ("_dashboard", ("actorgrid._dashboard",)),
    ("_node", ("actorgrid._node",)),
    ("_pool", ("actorgrid._pool",)),
    ("public", ("actorgrid", "actorgrid.testing")),
    ("cli", ("actorgrid.cli",)),
]

# The modules of actorgrid._runtime by row, lowest first (see the module docstring).
RUNTIME_ORDER: list[tuple[str, ...]] = [
    ("stepping",),
    ("segments", "gcpause", "heaptrim"),
    (
        "serialization",
        "signatures",
        "interrupt",
        "lineage",
        "restarts",
        "current",
        "blocking",
        "pulse",
        "demands",
        "holdings",
        "starting",
        "inbox",
        "parking",
        "gcyoung",
        "confirms",
    ),
    ("quiet",),
    ("refs",),
    ("generators",),
    ("handles",),
    ("records",),
    ("lending",),
    ("peer", "restartwait"),
    ("hosted",),
    ("output",),
    ("portal", "headlink"),
    ("observe", "seams"),
    ("getting", "waiting", "refcounting"),
    ("membership",),
    ("relinking",),
    ("links",),
    ("stored",),
    ("objects",),
    ("tasks",),
    ("following",),
    ("actors",),
    ("claims",),
    ("names",),
    ("core",),
    ("virtual", "envship"),
    ("context",),
    ("keyed", "producing"),
    ("lanes",),
    ("cancelling",),
    ("running", "inline"),
    ("agentruns",),
    ("agentstops",),
    ("agentpools",),
    ("agenthost",),
    ("executor",),
    ("options",),
    ("remote", "api"),
    ("oneach", "subscriptions", "decorator"),
]
RUNTIME = "actorgrid._runtime"

# Third-party and stdlib modules that mean I/O, which the sans-I/O layers must not touch.
IO_MODULES = frozenset({"trio", "trio_websocket", "socket", "ssl", "selectors", "asyncio"})
FORBIDDEN_IMPORTS: dict[str, frozenset[str]] = {
    "_protocol": IO_MODULES,
    "_scheduler": IO_MODULES,
    "_env": IO_MODULES,
}

# Source folders and the package each one installs as (pyproject: tool.setuptools.package-dir).
SOURCE_DIRS = {"actorgrid": "actorgrid", "cli": "actorgrid.cli"}

_PUBLIC = next(i for i, (name, _) in enumerate(LAYERS) if name == "public")
_CLI = next(i for i, (name, _) in enumerate(LAYERS) if name == "cli")


def _is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def layer_of(module: str) -> int | None:
    """The layer index owning ``module`` (an absolute name under actorgrid), or None."""
    matches = [
        (len(prefix), index)
        for index, (_, prefixes) in enumerate(LAYERS)
        for prefix in prefixes
        if prefix != "actorgrid" and (module == prefix or module.startswith(prefix + "."))
    ]
    if matches:
        return max(matches)[1]  # the most specific prefix wins
    parts = module.split(".")
    if len(parts) == 1 or not parts[1].startswith("_") or _is_dunder(parts[1]):
        return _PUBLIC
    return None


def _is_ours(module: str) -> bool:
    return module == "actorgrid" or module.startswith("actorgrid.")


def _imported_names(
    tree: ast.AST, module: str, is_package: bool
) -> list[tuple[int, str, str | None]]:
    """(line, absolute imported name, problem) for every import in ``tree``.

    For ``from X import y`` the name is ``X.y``, so importing a submodule through its parent
    (``from actorgrid import _node``) is seen as importing that submodule.
    """
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                if node.level - 1 >= len(parts):
                    found.append((node.lineno, "." * node.level, "relative import beyond the top"))
                    continue
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            for alias in node.names:
                name = target if alias.name == "*" else f"{target}.{alias.name}"
                found.append((node.lineno, name, None))
    return found


def check_source(
    source: str, module: str, *, is_package: bool, path: str = "<string>"
) -> list[str]:
    """Every layering violation in one module's source, as readable lines (empty: clean).

    ``module`` is the absolute module name the source installs as, e.g. ``actorgrid.cli.main``.
    """
    own = layer_of(module)
    if own is None:
        return [
            f"{path}: module {module} belongs to no layer; add its package to LAYERS in "
            "tests/test_layering.py, in its place in the import order"
        ]
    own_name = LAYERS[own][0]
    forbidden = FORBIDDEN_IMPORTS.get(own_name, frozenset())
    problems = []
    for line, name, problem in _imported_names(ast.parse(source, path), module, is_package):
        where = f"{path}:{line}: {module} (layer {own_name}) imports {name}"
        if problem is not None:
            problems.append(f"{where}: {problem}")
        elif not _is_ours(name):
            if name.split(".")[0] in forbidden:
                problems.append(f"{where}: layer {own_name} must do no I/O")
        else:
            target = layer_of(name)
            if target is None:
                problems.append(f"{where}, which belongs to no layer (add it to LAYERS)")
            elif target > own:
                problems.append(
                    f"{where} from higher layer {LAYERS[target][0]}: imports only go downward"
                )
            elif own == _CLI:
                second = name.split(".")[1] if "." in name else ""
                if second.startswith("_") and not _is_dunder(second):
                    problems.append(f"{where}: the CLI uses only the public API (import actorgrid)")
    return problems


def _runtime_row(module: str, order: list[tuple[str, ...]]) -> int | None:
    """The row of ``module`` (a module of actorgrid._runtime, or a name inside one), or None."""
    name = module[len(RUNTIME) + 1 :].split(".")[0]
    return next((row for row, names in enumerate(order) if name in names), None)


def check_runtime_order(
    source: str,
    module: str,
    *,
    path: str = "<string>",
    order: list[tuple[str, ...]] = RUNTIME_ORDER,
) -> list[str]:
    """Every import of ``module`` (in actorgrid._runtime) that breaks ``order``, as readable
    lines (empty: clean)."""
    own = _runtime_row(module, order)
    if own is None:
        return [
            f"{path}: module {module} has no row in RUNTIME_ORDER; add it in tests/"
            "test_layering.py, above every _runtime module it imports"
        ]
    problems = []
    for line, name, _ in _imported_names(ast.parse(source, path), module, False):
        if not name.startswith(RUNTIME + "."):
            continue
        target = _runtime_row(name, order)
        where = f"{path}:{line}: {module} (row {own}) imports {name}"
        if target is None:
            problems.append(f"{where}, which has no row in RUNTIME_ORDER")
        elif target >= own:
            kind = "its own row" if target == own else f"higher row {target}"
            problems.append(
                f"{where} from {kind}: inside _runtime imports only go to lower rows, so "
                "no circle forms; state what you need as a Protocol in the lower module"
            )
    return problems


def _module_name(path: Path) -> tuple[str, bool]:
    rel = path.relative_to(ROOT)
    package = SOURCE_DIRS[rel.parts[0]]
    rest = list(rel.with_suffix("").parts[1:])
    is_package = rest[-1] == "__init__"
    if is_package:
        rest.pop()
    return ".".join([package, *rest]), is_package


def _source_files() -> list[Path]:
    files: list[Path] = []
    for folder in SOURCE_DIRS:
        files.extend(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)
    return sorted(files)


SOURCE_FILES = _source_files()


def test_source_files_are_found() -> None:
    found = {p.relative_to(ROOT).as_posix() for p in SOURCE_FILES}
    assert {"actorgrid/_exceptions.py", "cli/main.py"} <= found


@pytest.mark.parametrize("path", SOURCE_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_imports_go_downward(path: Path) -> None:
    module, is_package = _module_name(path)
    rel = path.relative_to(ROOT).as_posix()
    problems = check_source(path.read_text("utf-8"), module, is_package=is_package, path=rel)
    if problems:
        print("\n".join(problems))
    assert not problems, "layering violations:\n" + "\n".join(problems)


RUNTIME_FILES = [p for p in SOURCE_FILES if p.parent == ROOT / "actorgrid" / "_runtime"]


def test_runtime_order_lists_every_module_once() -> None:
    listed = [name for row in RUNTIME_ORDER for name in row]
    assert len(listed) == len(set(listed)), "a module is listed twice in RUNTIME_ORDER"
    assert sorted(listed) == sorted(p.stem for p in RUNTIME_FILES)


@pytest.mark.parametrize("path", RUNTIME_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_runtime_imports_go_down_the_order(path: Path) -> None:
    module, _ = _module_name(path)
    rel = path.relative_to(ROOT).as_posix()
    problems = check_runtime_order(path.read_text("utf-8"), module, path=rel)
    assert not problems, "import order violations inside _runtime:\n" + "\n".join(problems)


# --- the checker itself -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "module", "is_package"),
    [
        ("from .._protocol import codec", "actorgrid._runtime.foo", False),
        ("from .._exceptions import ActorgridError", "actorgrid._transport.tcp", False),
        ("from . import refs", "actorgrid._runtime", True),
        ("from .refs import ObjectRef", "actorgrid._runtime", True),
        ("from ._node import cluster", "actorgrid", True),
        ("import actorgrid._runtime.refs", "actorgrid.testing.cluster", False),
        ("import trio\nimport msgpack", "actorgrid._transport.tcp", False),
        ("import heapq\nimport attrs", "actorgrid._scheduler.placement", False),
        (
            "import actorgrid as ag\nfrom actorgrid import remote, __version__",
            "actorgrid.cli.main",
            False,
        ),
        ("from .main import main", "actorgrid.cli", True),
        ("from ._spawn import x", "actorgrid._node.head", False),
    ],
)
def test_checker_allows(source: str, module: str, is_package: bool) -> None:
    assert check_source(source, module, is_package=is_package) == []


@pytest.mark.parametrize(
    ("source", "module", "is_package", "expected"),
    [
        ("from .._node import worker", "actorgrid._runtime.foo", False, "actorgrid._node.worker"),
        ("from .. import _node", "actorgrid._runtime.foo", False, "actorgrid._node"),
        ("from ...actorgrid import x", "actorgrid._runtime.foo", False, "beyond the top"),
        ("from actorgrid._runtime import refs", "actorgrid._protocol.codec", False, "higher layer"),
        ("from .. import remote", "actorgrid._runtime.foo", False, "higher layer public"),
        ("def f():\n    import trio", "actorgrid._scheduler.placement", False, "no I/O"),
        ("import socket", "actorgrid._scheduler", True, "no I/O"),
        ("from trio import lowlevel", "actorgrid._protocol.framing", False, "no I/O"),
        (
            "from actorgrid._runtime.refs import ObjectRef",
            "actorgrid.cli.main",
            False,
            "public API",
        ),
        ("from actorgrid import _node", "actorgrid.cli.main", False, "public API"),
        ("from ._new import x", "actorgrid", True, "belongs to no layer"),
        ("x = 1", "actorgrid._new", False, "belongs to no layer"),
    ],
)
def test_checker_catches(source: str, module: str, is_package: bool, expected: str) -> None:
    problems = check_source(source, module, is_package=is_package, path="synthetic.py")
    assert len(problems) == 1, problems
    assert expected in problems[0]
    assert problems[0].startswith("synthetic.py")


_ORDER = [("refs",), ("core", "other"), ("executor",)]


@pytest.mark.parametrize(
    ("source", "module"),
    [
        ("from .refs import ObjectRef", "actorgrid._runtime.core"),
        ("from . import refs", "actorgrid._runtime.executor"),
        ("import actorgrid._runtime.core", "actorgrid._runtime.executor"),
        ("from .._protocol import codec\nimport trio", "actorgrid._runtime.refs"),
    ],
)
def test_runtime_order_checker_allows(source: str, module: str) -> None:
    assert check_runtime_order(source, module, order=_ORDER) == []


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        ("from .core import Runtime", "actorgrid._runtime.refs", "higher row 1"),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .core import Runtime",
            "actorgrid._runtime.refs",
            "higher row",
        ),
        ("def f():\n    from .executor import x", "actorgrid._runtime.core", "higher row 2"),
        ("from . import other", "actorgrid._runtime.core", "its own row"),
        ("from .core import Runtime", "actorgrid._runtime.core", "its own row"),
        ("from actorgrid._runtime import executor", "actorgrid._runtime.refs", "higher row"),
        ("from .newmod import x", "actorgrid._runtime.core", "no row in RUNTIME_ORDER"),
        ("x = 1", "actorgrid._runtime.newmod", "has no row in RUNTIME_ORDER"),
    ],
)
def test_runtime_order_checker_catches(source: str, module: str, expected: str) -> None:
    problems = check_runtime_order(source, module, path="synthetic.py", order=_ORDER)
    assert len(problems) == 1, problems
    assert expected in problems[0]
    assert problems[0].startswith("synthetic.py")
