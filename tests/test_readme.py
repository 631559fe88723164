"""Every code block in README.md runs as written, or is checked as far as it can be.

The README marks its blocks with an HTML comment on the line just before the fence
(invisible on GitHub), as ``<!-- key: value; key: value -->``:

- no comment: a python block is a complete program (imports and ``ag.init()`` included),
  run on its own by ``test_python_block``;
- ``name: X`` names a block, so that other blocks and the checks below can refer to it;
- ``fragment of: X``: a python block that continues block X; it runs appended to X (and to
  whatever X continues);
- ``file: F``: a python block that is the file F, written for the shell blocks that use it;
- ``runs with: X, Y``: a python program that needs blocks X and Y running; the check of X
  runs it;
- ``not run: REASON``: a block that cannot run on loopback (other machines, ssh, your
  certificates); a check below validates it as far as it can.

Every ``# -> TEXT`` comment in a python block is a line that the program must print, in that
order (other lines may come between); ``...`` in TEXT matches anything. ``text`` blocks are
pictures. Shell and TOML blocks are checked by name; ``test_every_block_is_checked`` fails
for a block that nothing checks.

Every program runs in a folder of its own, in a process group of its own, with a marker in
its environment; afterwards no process carrying the marker may be left (the embedded
cluster's workers, the heads and nodes the CLI starts). Nothing here talks to anything but
loopback: the two-machine blocks run on 127.0.0.1 (with a free port in place of 6380), and
the blocks that name 10.0.0.x are not run.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import packages_distributions
from pathlib import Path

import psutil
import pytest

import actorgrid as ag

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RUN_TIMEOUT_S = 90.0  # under pytest's timeout, so that a hung program shows its output
GONE_TIMEOUT_S = 15.0
MARKER_ENV = "ACTORGRID_README_TEST"

_FENCE = re.compile(r"^```(\S*)\s*$")
_MARKER = re.compile(r"^<!--(.*)-->\s*$")
_EXPECTED = re.compile(r"#\s*->\s*(.*?)\s*$")


@dataclass
class Block:
    lang: str
    code: str
    line: int  # of the opening fence, 1-based
    marks: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.marks.get("name") or f"line {self.line}"

    @property
    def runs_alone(self) -> bool:
        return self.lang == "python" and not {"file", "not run", "runs with"} & set(self.marks)


def parse_readme(text: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].rstrip() == "```"), None)
        assert end is not None, f"README.md line {i + 1}: the code block is never closed"
        marks: dict[str, str] = {}
        marker = _MARKER.match(lines[i - 1]) if i > 0 else None
        if marker:
            for part in marker.group(1).split(";"):
                key, sep, value = part.partition(":")
                assert sep, f"README.md line {i}: {part.strip()!r} is not `key: value`"
                marks[key.strip()] = value.strip()
        blocks.append(Block(opening.group(1), "\n".join(lines[i + 1 : end]) + "\n", i + 1, marks))
        i = end + 1
    return blocks


BLOCKS = parse_readme(README.read_text())
BY_NAME = {b.marks["name"]: b for b in BLOCKS if "name" in b.marks}


# Prepended to a Python block when it runs: its stdout writes each line at once, as in a
# terminal. (PYTHONUNBUFFERED, which these runs set, makes print write its text and its newline
# apart, and a worker's log line written to the merged stderr in between splits the line.)
_LINE_BUFFERED = "import sys; sys.stdout.reconfigure(line_buffering=True, write_through=False)\n"


def program(block: Block) -> str:
    """The block's code, after the code of the blocks it continues."""
    parts = [block.code]
    while "fragment of" in block.marks:
        block = BY_NAME[block.marks["fragment of"]]
        parts.insert(0, block.code)
    return "\n".join(parts)


def expected_lines(code: str) -> list[str]:
    return [m.group(1) for line in code.splitlines() if (m := _EXPECTED.search(line))]


def assert_printed(expected: list[str], output: str) -> None:
    """Each expected line is printed, in order; ``...`` matches anything."""
    lines = output.splitlines()
    at = 0
    for want in expected:
        pattern = re.compile(".*".join(map(re.escape, want.split("..."))))
        while at < len(lines) and not pattern.fullmatch(lines[at].rstrip()):
            at += 1
        assert at < len(lines), f"expected the line {want!r} (in order) in:\n{output}"
        at += 1


# --- processes -------------------------------------------------------------------------------


class Marked:
    """The processes started with one environment marker, found after the fact."""

    def __init__(self) -> None:
        self.token = uuid.uuid4().hex

    def env(self, folder: Path, **extra: str) -> dict[str, str]:
        env = {
            **os.environ,
            MARKER_ENV: self.token,
            "PYTHONUNBUFFERED": "1",
            "PATH": f"{_commands(folder)}{os.pathsep}{os.environ.get('PATH', '')}",
            "ACTORGRID_CLUSTER_FILE": str(folder / "state" / "cluster.json"),
            **extra,
        }
        env.pop("ACTORGRID_ADDRESS", None)
        env.pop("ACTORGRID_SECRET", None)
        return env

    def alive(self) -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter():
            try:
                if (
                    proc.environ().get(MARKER_ENV) == self.token
                    and proc.status() != psutil.STATUS_ZOMBIE
                ):
                    found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                pass
        return found

    def assert_gone(self) -> None:
        deadline = time.monotonic() + GONE_TIMEOUT_S
        while (left := self.alive()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not left, f"processes left behind: {[_describe(p) for p in left]}"

    def kill_all(self) -> None:
        for proc in self.alive():
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass


def _commands(folder: Path) -> Path:
    """A folder where `python` and `actorgrid`, as shell blocks call them, are this
    interpreter's: its own bin folder, or where the installer put scripts elsewhere (pip
    --user), small scripts that run it."""
    here = Path(sys.executable).parent
    if (here / "actorgrid").is_file() and (here / "python").is_file():
        return here
    shims = folder / ".bin"
    shims.mkdir(exist_ok=True)
    for name, argv in (("python", ""), ("actorgrid", " -m actorgrid.cli")):
        shim = shims / name
        shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)}{argv} "$@"\n')
        shim.chmod(0o755)
    return shims


def _describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid}: {' '.join(proc.cmdline())}"
    except psutil.Error:
        return f"{proc.pid}: (gone)"


@pytest.fixture
def marked(tmp_path: Path) -> Iterator[Marked]:
    marked = Marked()
    try:
        yield marked
    finally:
        cluster_file = tmp_path / "state" / "cluster.json"
        if cluster_file.exists():  # a shell block stopped before its `actorgrid down`
            subprocess.run(
                [sys.executable, "-m", "actorgrid.cli", "down"],
                env=marked.env(tmp_path),
                capture_output=True,
                timeout=60,
                check=False,
            )
        marked.kill_all()


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{argv} did not finish within {RUN_TIMEOUT_S:.0f} s:\n{out}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, "")


def cli_help(*command: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "actorgrid.cli", *command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


# --- the blocks ------------------------------------------------------------------------------


def test_the_readme_marks_are_well_formed() -> None:
    known = {"name", "fragment of", "file", "runs with", "not run"}
    for block in BLOCKS:
        assert set(block.marks) <= known, f"README.md line {block.line}: {block.marks}"
        assert block.lang in {"python", "bash", "toml", "text"}, (
            f"README.md line {block.line}: say the block's language (python, bash, toml, text)"
        )
        if "fragment of" in block.marks:
            assert block.marks["fragment of"] in BY_NAME, f"README.md line {block.line}"
            assert BY_NAME[block.marks["fragment of"]].line < block.line, "set up before use"
        for other in block.marks.get("runs with", "").split(","):
            assert not other.strip() or other.strip() in BY_NAME, f"README.md line {block.line}"
    names = [b.marks["name"] for b in BLOCKS if "name" in b.marks]
    assert len(names) == len(set(names)), names


RUNNABLE = [b for b in BLOCKS if b.runs_alone]


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.name for b in RUNNABLE])
def test_python_block(block: Block, tmp_path: Path, marked: Marked) -> None:
    code = program(block)
    script = tmp_path / "block.py"
    script.write_text(_LINE_BUFFERED + code)
    result = run([sys.executable, str(script)], tmp_path, marked.env(tmp_path))
    assert result.returncode == 0, f"README.md line {block.line}:\n{result.stdout}"
    assert_printed(expected_lines(code), result.stdout)
    marked.assert_gone()


def _by_name(name: str) -> Block:
    assert name in BY_NAME, f"README.md has no block named {name!r}"
    return BY_NAME[name]


def test_install_command_installs_what_the_examples_import() -> None:
    words = shlex.split(_by_name("install").code.strip())
    assert words[:3] == ["pip", "install", "-e"] and words[4:6] == ["&&", "python"], words
    extra = re.fullmatch(r"\.\[(\w+)\]", words[3])
    assert extra, f"the install command should install an extra, not {words[3]!r}"
    script = ROOT / words[6]
    assert script.is_file() and script.parent.name == "examples", script

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    installed = {_requirement_name(r) for r in project["dependencies"]}
    installed |= {_requirement_name(r) for r in extras[extra.group(1)]}
    dists = packages_distributions()
    for example in sorted((ROOT / "examples").glob("*.py")):
        for module in _third_party_imports(example):
            candidates = {_normalize(d) for d in dists.get(module, [module])}
            assert candidates & installed, (
                f"{example.name} imports {module}, which `pip install -e '.[{extra.group(1)}]'` "
                f"does not install: add it to the {extra.group(1)!r} extra in pyproject.toml"
            )
    # CI installs .[test] and runs the examples (tests/test_examples.py).
    test_extra = {_requirement_name(r) for r in extras["test"]}
    assert {_requirement_name(r) for r in extras[extra.group(1)]} <= test_extra


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return _normalize(match.group(0))


def _third_party_imports(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - {"actorgrid", "__future__"}


def test_test_command_is_what_ci_runs() -> None:
    command = _by_name("test").code.strip()
    ci = (ROOT / ".ci" / "run").read_text()
    body = re.search(r"readme_test_command\(\) \{\n(.*?)\n\}", ci, re.DOTALL)
    assert body, ".ci/run defines no readme_test_command"
    assert body.group(1).strip() == command
    assert f'step "{command} ' in ci, "the step that runs it names it too"


@pytest.mark.timeout(300)
def test_one_machine(tmp_path: Path, marked: Marked) -> None:
    files = [b for b in BLOCKS if "file" in b.marks]
    for block in files:
        (tmp_path / block.marks["file"]).write_text(block.code)
    script = tmp_path / "one-machine.sh"
    script.write_text(_by_name("one-machine").code)
    result = run(["bash", "-e", str(script)], tmp_path, marked.env(tmp_path))
    assert result.returncode == 0, result.stdout
    out = result.stdout
    assert "2 workers" in out, out  # what `up` started
    for block in files:
        assert_printed(expected_lines(block.code), out)
    assert "workers: 2 (0 suspended)" in out, out
    assert "CPUs: 2 total, 0 reserved by running tasks" in out, out
    assert "no tasks are running or queued" in out and "no actors are alive" in out, out
    listing = next(line for line in out.splitlines() if line.startswith('[{"worker_id"'))
    assert [w["state"] for w in json.loads(listing)] == ["alive", "alive"]
    assert "stopped the cluster head" in out, out
    assert not (tmp_path / "state" / "cluster.json").exists()
    marked.assert_gone()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for(check: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.timeout(300)
def test_two_machines_on_loopback(tmp_path: Path, marked: Marked) -> None:
    """The head, node and driver blocks, each in a folder of its own (its "machine")."""
    port = str(_free_port())
    head_block, node_block, driver = (_by_name(n) for n in ("head", "node", "driver"))
    assert set(driver.marks["runs with"].replace(" ", "").split(",")) == {"head", "node"}
    for block in (head_block, node_block, driver):
        assert "127.0.0.1:6380" in block.code or "--port 6380" in block.code, block.code
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    started: list[subprocess.Popen[str]] = []

    def start(block: Block, folder: Path) -> tuple[subprocess.Popen[str], Path]:
        out = folder / f"{block.name}.out"
        with out.open("w") as f:
            proc = subprocess.Popen(
                ["bash", "-c", block.code.replace("6380", port)],
                cwd=folder,
                env=marked.env(folder),
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        started.append(proc)
        return proc, out

    def printed(proc: subprocess.Popen[str], out: Path, text: str) -> Callable[[], bool]:
        def check() -> bool:
            assert proc.poll() is None, f"exited {proc.returncode}:\n{out.read_text()}"
            return text in out.read_text()

        return check

    try:
        head, head_out = start(head_block, first)
        _wait_for(printed(head, head_out, "Ctrl-C"), "the head to start")
        text = head_out.read_text()
        assert f"127.0.0.1:{port}" in text, text
        join = next(line for line in text.splitlines() if "actorgrid node --address" in line)
        secret_file = Path(shlex.split(join)[shlex.split(join).index("--secret-file") + 1])
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600  # as the block says
        shutil.copy(secret_file, second / "cluster.secret")  # what scp does

        node, node_out = start(node_block, second)
        _wait_for(printed(node, node_out, "joined the head"), "the node to join")

        script = second / "driver.py"
        script.write_text(driver.code.replace("6380", port))
        result = run([sys.executable, str(script)], second, marked.env(second))
        assert result.returncode == 0, result.stdout
        assert_printed(expected_lines(driver.code), result.stdout)

        os.killpg(head.pid, signal.SIGINT)  # Ctrl-C in the head's terminal
        assert head.wait(timeout=60) == 0, head_out.read_text()
        assert node.wait(timeout=60) == 0, node_out.read_text()  # the head closed it
        marked.assert_gone()
    finally:
        for proc in started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_cluster_toml_is_a_valid_up_config(tmp_path: Path) -> None:
    """Not run (ssh to other machines): parsed as `actorgrid up --config` parses it."""
    from actorgrid.cli._options import START_OPTIONS, load_cluster_config
    from actorgrid.cli.up import _node_argv

    block = _by_name("cluster.toml")
    assert block.marks.get("not run"), "say why the block is not run"
    path = tmp_path / "cluster.toml"
    path.write_text(block.code)
    config = load_cluster_config(path)
    assert set(config.head) <= {o.key for o in START_OPTIONS}
    up_help = cli_help("up")
    for key in config.head:
        assert f"--{key.replace('_', '-')}" in up_help, key
    assert config.hosts
    argv = _node_argv(config.command, config.hosts[0], "10.0.0.1:6380", config.num_workers, 2**30)
    assert argv[:2] == ["ssh", config.hosts[0]] and argv[2:4] == ["actorgrid", "node"], argv
    node_help = cli_help("node")
    for flag in (word for word in argv[4:] if word.startswith("--")):
        assert flag in node_help, flag
    assert "--secret-stdin" in argv


def test_tls_block_uses_the_api_as_it_is(tmp_path: Path) -> None:
    """Not run (your certificates, a TLS head): its calls match the API's signatures."""
    block = _by_name("tls")
    assert block.marks.get("not run"), "say why the block is not run"
    tree = ast.parse(block.code)
    calls = {ast.unparse(node.func): node for node in ast.walk(tree) if isinstance(node, ast.Call)}
    targets = {"ag.TLSConfig": ag.TLSConfig, "ag.init": ag.init}
    assert set(calls) == set(targets), set(calls)
    for name, target in targets.items():
        call = calls[name]
        args = [None] * len(call.args)
        kwargs = {k.arg: None for k in call.keywords if k.arg}
        inspect.signature(target).bind(*args, **kwargs)  # TypeError if they do not fit
    flags = ("--tls", "--certfile", "--keyfile", "--cafile")
    after = README.read_text().split(block.code, 1)[1].split("\n\n", 2)[1]
    assert " ".join(flags[:2]) in after, after
    for command in ("start", "node", "up"):
        assert f"`{command}`" in after or f"actorgrid {command}`" in after, after
        text = cli_help(command)
        for flag in flags:
            assert flag in text, (command, flag)


@pytest.mark.timeout(300)
def test_mypy_plugin_block_is_what_this_repo_uses(tmp_path: Path) -> None:
    """The TOML block enables the plugin as this repository's own mypy run does (CI's `mypy`
    step checks tests/typing with it); where mypy is installed, the Typing block passes mypy
    with that config and the call its comment calls a mypy error is one."""
    block = _by_name("mypy-plugin")
    plugins = tomllib.loads(block.code)["tool"]["mypy"]["plugins"]
    ours = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]["plugins"]
    assert plugins and set(plugins) <= set(ours), (plugins, ours)
    for plugin in plugins:
        source = ROOT / (plugin.replace(".", "/") + ".py")
        functions = {
            n.name for n in ast.parse(source.read_text()).body if isinstance(n, ast.FunctionDef)
        }
        assert "plugin" in functions, f"{source} defines no plugin() entry point for mypy"

    typing_block = _by_name("typing")
    bad_call = 'c.incr.remote("2")'
    assert f"{bad_call} is a mypy error" in typing_block.code
    if importlib.util.find_spec("mypy") is None:
        return  # `pip install -e '.[test]'` has no mypy; CI installs it for its mypy step
    indent = re.search(r"^( +)ref = c\.incr\.remote", typing_block.code, re.MULTILINE)
    assert indent, typing_block.code
    (tmp_path / "block.py").write_text(typing_block.code + f"{indent.group(1)}{bad_call}\n")
    # The README's lines, then what the test needs: strict, and no reports on actorgrid itself
    # (its optional stubs, such as types-psutil, may be missing here).
    (tmp_path / "pyproject.toml").write_text(
        block.code + 'strict = true\nfollow_imports = "silent"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "block.py"],
        cwd=tmp_path,
        env={**os.environ, "MYPYPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    last_line = len((tmp_path / "block.py").read_text().splitlines())
    assert len(errors) == 1 and errors[0].startswith(f"block.py:{last_line}:"), result.stdout
    assert "[arg-type]" in errors[0], result.stdout


@pytest.mark.timeout(300)
def test_jobs(tmp_path: Path, marked: Marked) -> None:
    """The jobs block, with the job script where it says."""
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "job.py").write_text(_by_name("job-script").code)
    script = tmp_path / "jobs.sh"
    script.write_text(_by_name("jobs").code)
    result = run(["bash", "-e", str(script)], tmp_path, marked.env(tmp_path))
    assert result.returncode == 0, result.stdout
    out = result.stdout
    assert_printed(expected_lines(_by_name("job-script").code), out)
    assert "JOB ID" in out and "stopped job job-" in out, out
    assert not (tmp_path / "state" / "cluster.json").exists()
    marked.assert_gone()


def test_logs_cli_block_is_commands_the_cli_takes() -> None:
    from actorgrid.cli.main import build_parser

    parser = build_parser()
    commands = [line.split("#")[0].strip() for line in _by_name("logs-cli").code.splitlines()]
    for command in filter(None, commands):
        argv = shlex.split(command)
        assert argv[0] == "actorgrid", command
        parser.parse_args(argv[1:])  # exits (fails the test) on an unknown option


CHECKED_BY_NAME = {
    "install": test_install_command_installs_what_the_examples_import,
    "test": test_test_command_is_what_ci_runs,
    "one-machine": test_one_machine,
    "head": test_two_machines_on_loopback,
    "node": test_two_machines_on_loopback,
    "driver": test_two_machines_on_loopback,
    "cluster.toml": test_cluster_toml_is_a_valid_up_config,
    "tls": test_tls_block_uses_the_api_as_it_is,
    "mypy-plugin": test_mypy_plugin_block_is_what_this_repo_uses,
    "job-script": test_jobs,
    "jobs": test_jobs,
    "logs-cli": test_logs_cli_block_is_commands_the_cli_takes,
}


def test_every_block_is_checked() -> None:
    unchecked = []
    for block in BLOCKS:
        if block.lang == "text" or block.runs_alone or "fragment of" in block.marks:
            continue
        if "file" in block.marks:
            continue  # written and run by the shell blocks' checks (test_one_machine)
        if block.marks.get("name") not in CHECKED_BY_NAME:
            unchecked.append(f"README.md line {block.line} ({block.lang}, {block.marks})")
    assert not unchecked, "blocks that no test checks: " + "; ".join(unchecked)
    assert set(CHECKED_BY_NAME) <= set(BY_NAME), set(CHECKED_BY_NAME) - set(BY_NAME)
    fragments = [b for b in BLOCKS if "fragment of" in b.marks]
    assert all(b.lang == "python" for b in fragments)
