"""The cluster commands (up, down, start --head, node, status, list), run as users run them:
as separate processes, each test with a cluster file of its own (ACTORGRID_CLUSTER_FILE).

Every process a test starts, directly or through `up`, is recorded with its descendants
before it is stopped, and the test checks that none is left; whatever happens, clean-up runs
`actorgrid down` and kills what remains. A zombie counts as gone: the processes `up` starts
outlive it, so an init that does not reap may inherit them.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

COMMAND_TIMEOUT_S = 90
GONE_TIMEOUT_S = 15.0
PULSE = "0.2"


# --- helpers --------------------------------------------------------------------------------


def _alive(pid: int, create_time: float | None) -> bool:
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 0.01:
            return False  # the pid was reused
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Processes:
    """Processes a test started, directly or not, to check that they go away."""

    def __init__(self) -> None:
        self.known: dict[int, float | None] = {}

    def add_tree(self, pid: int) -> None:
        """``pid`` and its descendants, as they are now."""
        try:
            root = psutil.Process(pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for proc in tree:
            try:
                self.known[proc.pid] = proc.create_time()
            except psutil.NoSuchProcess:
                pass

    def alive(self) -> list[int]:
        return [pid for pid, t in self.known.items() if _alive(pid, t)]

    def assert_gone(self, timeout_s: float = GONE_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while (left := self.alive()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not left, f"processes still alive after {timeout_s} s: {self._describe(left)}"

    def kill_leftovers(self) -> None:
        for pid in self.alive():
            try:
                psutil.Process(pid).kill()
            except psutil.NoSuchProcess:
                pass

    @staticmethod
    def _describe(pids: list[int]) -> list[str]:
        out = []
        for pid in pids:
            try:
                out.append(f"{pid}: {' '.join(psutil.Process(pid).cmdline())}")
            except psutil.NoSuchProcess:
                out.append(f"{pid}: (gone)")
        return out


class Env:
    """A cluster file of its own, and the CLI run against it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.cluster_file = folder / "state" / "cluster.json"
        self.vars = {
            **os.environ,
            "ACTORGRID_CLUSTER_FILE": str(self.cluster_file),
            "PYTHONUNBUFFERED": "1",
        }
        self.vars.pop("ACTORGRID_ADDRESS", None)
        self.vars.pop("ACTORGRID_SECRET", None)
        self.processes = Processes()

    def run(
        self, *argv: str, timeout_s: float = COMMAND_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        # In a folder of its own, as a user's would be: from the repository root, `python -m`
        # could find the source tree's actorgrid before the installed one.
        return subprocess.run(
            [sys.executable, "-m", "actorgrid.cli", *argv],
            cwd=self.folder,
            env=self.vars,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def popen(self, *argv: str, out: Path) -> subprocess.Popen[str]:
        with out.open("w") as f:
            proc = subprocess.Popen(
                [sys.executable, "-m", "actorgrid.cli", *argv],
                cwd=self.folder,
                env=self.vars,
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        self.processes.add_tree(proc.pid)
        return proc

    def record_cluster(self) -> None:
        """The head `up` started, the node launchers, and all their descendants."""
        recorded = json.loads(self.cluster_file.read_text())
        self.processes.add_tree(recorded["head_pid"])
        sidecar = self.cluster_file.with_name("cluster.processes.json")
        for launcher in json.loads(sidecar.read_text())["launchers"]:
            self.processes.add_tree(launcher["pid"])

    def status(self) -> dict[str, object]:
        result = self.run("status", "--json")
        assert result.returncode == 0, _describe(result)
        report: dict[str, object] = json.loads(result.stdout)
        return report

    def clean_up(self) -> None:
        try:
            if self.cluster_file.exists():
                self.run("down", timeout_s=60)
        finally:
            self.processes.kill_leftovers()


def _describe(result: subprocess.CompletedProcess[str]) -> str:
    return (
        f"{' '.join(map(str, result.args))} exited {result.returncode}\n"
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )


def _wait_for(check: Callable[[], object], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _wait_for_text(
    path: Path, text: str, proc: subprocess.Popen[str], timeout_s: float = 60
) -> str:
    def seen() -> bool:
        assert proc.poll() is None, f"exited {proc.returncode}:\n{path.read_text()}"
        return text in path.read_text()

    _wait_for(seen, f"{text!r} in {path}", timeout_s)
    return path.read_text()


def _stop(proc: subprocess.Popen[str], sig: int, timeout_s: float = 30) -> int:
    proc.send_signal(sig)
    return proc.wait(timeout=timeout_s)


# --- a cluster `up` started, shared by the tests that only use it -----------------------------


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Env, str]]:
    env = Env(tmp_path_factory.mktemp("up"))
    try:
        result = env.run(
            "up", "--num-workers", "2", "--pulse-interval", PULSE,
            "--resources", '{"camera": 1}', "--labels", "zone=a",
        )  # fmt: skip
        if env.cluster_file.exists():
            env.record_cluster()
        assert result.returncode == 0, _describe(result)
        yield env, result.stdout
        down = env.run("down")
        assert down.returncode == 0, _describe(down)
        assert not env.cluster_file.exists()
        env.processes.assert_gone()
    finally:
        env.clean_up()


def test_up_writes_a_private_cluster_file_and_says_how_to_connect(up: tuple[Env, str]) -> None:
    env, stdout = up
    recorded = json.loads(env.cluster_file.read_text())
    assert stat.S_IMODE(env.cluster_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(env.cluster_file.parent.stat().st_mode) == 0o700
    address = recorded["address"]
    secret_file = env.cluster_file.with_name("cluster.secret")
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert bytes.fromhex(secret_file.read_text().strip()) == bytes.fromhex(recorded["secret"])
    assert address in stdout
    assert str(env.cluster_file) in stdout
    assert 'ag.init(address="auto")' in stdout
    assert f"actorgrid node --address {address} --secret-file {secret_file}" in stdout
    assert f"ACTORGRID_ADDRESS={address}" in stdout
    assert "2 workers started on this machine, all connected" in stdout


def test_up_again_reports_the_running_cluster(up: tuple[Env, str]) -> None:
    env, _ = up
    recorded = json.loads(env.cluster_file.read_text())
    result = env.run("up")
    assert result.returncode == 0, _describe(result)
    assert (
        f"a cluster is already running at {recorded['address']} "
        f"(head pid {recorded['head_pid']}, 2 workers connected)" in result.stdout
    )
    assert "not applied" not in result.stdout
    assert json.loads(env.cluster_file.read_text()) == recorded

    # Options for a cluster that already runs are not applied, and the output says so and how.
    result = env.run("up", "--num-workers", "3", "--max-message-bytes", "1MiB")
    assert result.returncode == 0, _describe(result)
    assert "2 workers connected" in result.stdout
    assert (
        "note: not applied: --num-workers 3 --max-message-bytes 1048576; a running cluster "
        "keeps the settings it was started with. To apply them, stop it and start it again: "
        "`actorgrid down`, then `actorgrid up --num-workers 3 --max-message-bytes 1048576`"
    ) in result.stdout
    assert json.loads(env.cluster_file.read_text()) == recorded
    assert env.status()["num_workers"] == 2


DRIVER = textwrap.dedent(
    """
    import sys
    import actorgrid as ag

    def square(x):
        return x * x

    class Counter:
        def __init__(self):
            self.n = 0

        def incr(self):
            self.n += 1
            return self.n

    ag.init(address="auto")
    print(ag.get([ag.remote(square).remote(i) for i in range(6)], timeout=60), flush=True)
    counter = ag.remote(Counter).options(
        name="counter", resources={"camera": 1}, label_selector={"zone": "a"}
    ).remote()
    print(ag.get(counter.incr.remote(), timeout=60), flush=True)
    print("ready", flush=True)
    sys.stdin.readline()  # keeps the actor alive while the test lists it
    ag.shutdown()
    """
)


def test_driver_status_and_lists(up: tuple[Env, str], tmp_path: Path) -> None:
    env, _ = up
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER],
        cwd=tmp_path,
        env=env.vars,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert driver.stdout is not None
        assert driver.stdout.readline().strip() == str([i * i for i in range(6)])
        assert driver.stdout.readline().strip() == "1"
        assert driver.stdout.readline().strip() == "ready"

        text = env.run("status")
        assert text.returncode == 0, _describe(text)
        assert "workers: 2 (0 suspended)" in text.stdout
        assert "CPUs: 2 total, 0 reserved by running tasks" in text.stdout
        assert "actors: 1" in text.stdout
        assert "tasks: 0 running, 0 queued" in text.stdout
        assert "camera: 1 total, 1 used, 0 free" in text.stdout  # the counter holds it

        report = env.status()
        assert report["num_workers"] == 2
        assert report["num_cpus"] == 2.0
        assert report["num_actors"] == 1
        nodes = report["nodes"]
        assert isinstance(nodes, list) and len(nodes) == 1
        assert nodes[0]["num_workers"] == 2
        assert nodes[0]["labels"]["zone"] == "a"
        assert report["resources"]["camera"] == {"total": 1.0, "used": 1.0, "free": 0.0}

        listed = {}
        for kind in ("nodes", "workers", "actors", "tasks"):
            result = env.run("list", kind, "--json")
            assert result.returncode == 0, _describe(result)
            listed[kind] = json.loads(result.stdout)
        assert len(listed["nodes"]) == 1
        assert {w["state"] for w in listed["workers"]} == {"alive"}
        assert len(listed["workers"]) == 2
        assert [(a["label"], a["name"]) for a in listed["actors"]] == [("Counter", "counter")]
        assert listed["actors"][0]["worker_id"] in {w["worker_id"] for w in listed["workers"]}
        assert listed["tasks"] == []
        idle = env.run("list", "tasks")
        assert idle.returncode == 0, _describe(idle)
        assert idle.stdout == "no tasks are running or queued\n"

        table = env.run("list", "actors")
        assert table.returncode == 0, _describe(table)
        assert "counter" in table.stdout and table.stdout.startswith("ACTOR")
    finally:
        driver.communicate("\n", timeout=30)
    assert driver.returncode == 0, driver.stderr


OPERATED = textwrap.dedent(
    """
    import sys
    import time
    import actorgrid as ag

    class Counter:
        def __init__(self):
            self.n = 0

        def incr(self):
            self.n += 1
            return self.n

    def spin(seconds):
        # Short sleeps: a KeyboardInterrupt from a cancel lands between them.
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.01)
        return "finished"

    async def idle(ctx: ag.Context):
        async for _ in ctx.mailbox:
            pass

    def outcome(get):
        try:
            return repr(get())
        except Exception as exc:
            return type(exc).__name__

    ag.init(address="auto")
    counter = ag.remote(Counter)
    first, second = counter.remote(), counter.remote()
    named = counter.options(name="tally", namespace="books").remote()
    print(ag.get([h.incr.remote() for h in (first, second, named)], timeout=60), flush=True)
    agent = ag.remote(idle).remote()
    spinning = ag.remote(spin).remote(300)
    print("ready", flush=True)
    sys.stdin.readline()  # the test kills two actors and cancels the task
    print("first", outcome(lambda: ag.get(first.incr.remote(), timeout=60)), flush=True)
    print("second", outcome(lambda: ag.get(second.incr.remote(), timeout=60)), flush=True)
    print("named", outcome(lambda: ag.get(named.incr.remote(), timeout=60)), flush=True)
    print("spin", outcome(lambda: ag.get(spinning, timeout=60)), flush=True)
    forced = ag.remote(spin).remote(300)
    print("ready", flush=True)
    sys.stdin.readline()  # the test cancels it with --force
    print("forced", outcome(lambda: ag.get(forced, timeout=60)), flush=True)
    ag.shutdown()
    """
)


def _list(env: Env, kind: str) -> list[dict[str, object]]:
    result = env.run("list", kind, "--json")
    assert result.returncode == 0, _describe(result)
    items: list[dict[str, object]] = json.loads(result.stdout)
    return items


def _running_spin(env: Env) -> dict[str, object] | None:
    return next(
        (t for t in _list(env, "tasks") if t["function"] == "spin" and t["state"] == "running"),
        None,
    )


def test_kill_and_cancel_what_another_driver_started(up: tuple[Env, str], tmp_path: Path) -> None:
    env, _ = up
    driver = subprocess.Popen(
        [sys.executable, "-c", OPERATED],
        cwd=tmp_path,
        env=env.vars,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert driver.stdout is not None and driver.stdin is not None
        assert driver.stdout.readline().strip() == "[1, 1, 1]"
        assert driver.stdout.readline().strip() == "ready"
        _wait_for(lambda: _running_spin(env) is not None, "the task to run")

        # Actors of one driver share its id prefix; the listing tells them apart. (Actors
        # of the module's other tests may be listed too: only this driver's are looked at.)
        listed = _list(env, "actors")
        prefix = next(str(a["actor_id"]) for a in listed if a["name"] == "tally")[:16]
        actors = [a for a in listed if str(a["actor_id"]).startswith(prefix)]
        assert len(actors) == 4
        table = env.run("list", "actors")
        assert table.returncode == 0, _describe(table)
        shown = {line.split()[0] for line in table.stdout.splitlines()[1:]}
        assert {a["short_id"] for a in actors} <= shown, table.stdout
        assert len({a["short_id"] for a in actors}) == 4
        by_kind = {(a["label"], a["name"]): a for a in actors}
        # Ids count up in the process that made them: the first Counter has the lower one.
        first, second = sorted(
            (a for a in actors if a["label"] == "Counter" and a["name"] is None),
            key=lambda a: str(a["actor_id"]),
        )
        assert by_kind[("idle", None)]["kind"] == "coroutine"

        # An idle coroutine actor and idle class actors reserve no CPU; the task one.
        status = env.run("status")
        assert "CPUs: 2 total, 1 reserved by running tasks" in status.stdout, status.stdout
        tasks = env.run("list", "tasks")
        spin_row = next(line for line in tasks.stdout.splitlines() if " spin " in line)
        spin = _running_spin(env)
        assert spin is not None
        assert spin_row.split()[:4] == [spin["short_id"], "spin", "task", "running"]
        assert str(spin["pid"]) in spin_row

        # kill: by the short id shown, by name in a namespace; clear errors otherwise.
        killed = env.run("kill", str(first["short_id"]))
        assert killed.returncode == 0, _describe(killed)
        assert killed.stdout.startswith(f"killed actor {first['short_id']}: Counter")
        common = str(first["actor_id"])[:16]  # the driver's prefix: both Counters have it
        ambiguous = env.run("kill", common)
        assert ambiguous.returncode == 1, _describe(ambiguous)
        assert f"'{common}' matches" in ambiguous.stderr and "short id" in ambiguous.stderr
        wrong_ns = env.run("kill", "tally")
        assert wrong_ns.returncode == 1, _describe(wrong_ns)
        assert "--namespace" in wrong_ns.stderr and len(wrong_ns.stderr.splitlines()) == 1
        by_name = env.run("kill", "tally", "--namespace", "books")
        assert by_name.returncode == 0, _describe(by_name)
        assert "killed actor" in by_name.stdout and "'tally' (namespace 'books')" in by_name.stdout

        # cancel: the running task, by the short id shown.
        unknown = env.run("cancel", "ffffffffffff")
        assert unknown.returncode == 1, _describe(unknown)
        assert "no running or queued task" in unknown.stderr
        cancelled = env.run("cancel", str(spin["short_id"]))
        assert cancelled.returncode == 0, _describe(cancelled)
        assert f"cancelled task {spin['short_id']} (spin, running" in cancelled.stdout

        driver.stdin.write("\n")
        driver.stdin.flush()
        assert driver.stdout.readline().split() == ["first", "ActorDiedError"]
        assert driver.stdout.readline().split() == ["second", "2"]
        assert driver.stdout.readline().split() == ["named", "ActorDiedError"]
        assert driver.stdout.readline().split() == ["spin", "TaskCancelledError"]
        left = {
            a["actor_id"] for a in _list(env, "actors") if str(a["actor_id"]).startswith(prefix)
        }
        assert left == {second["actor_id"], by_kind[("idle", None)]["actor_id"]}

        # cancel --force: the worker is killed, the caller told, the slot refilled.
        assert driver.stdout.readline().strip() == "ready"
        _wait_for(lambda: _running_spin(env) is not None, "the second task to run")
        forced = _running_spin(env)
        assert forced is not None
        result = env.run("cancel", "--force", str(forced["short_id"]))
        assert result.returncode == 0, _describe(result)
        assert "killed its worker" in result.stdout
        driver.stdin.write("\n")
        driver.stdin.flush()
        assert driver.stdout.readline().split() == ["forced", "TaskCancelledError"]
        assert not _alive(int(str(forced["pid"])), None)
        _wait_for(lambda: env.status()["num_workers"] == 2, "a fresh worker in the slot")
    finally:
        try:
            _, errors = driver.communicate("\n\n", timeout=30)  # also closes its pipes
        except subprocess.TimeoutExpired:
            driver.kill()
            _, errors = driver.communicate()
    assert driver.returncode == 0, errors


def test_node_joins_and_sigterm_stops_it(up: tuple[Env, str], tmp_path: Path) -> None:
    env, _ = up
    recorded = json.loads(env.cluster_file.read_text())
    secret_file = env.cluster_file.with_name("cluster.secret")
    out = tmp_path / "node.out"
    node = env.popen(
        "node",
        "--address", recorded["address"],
        "--secret-file", str(secret_file),
        "--num-workers", "1",
        "--pulse-interval", PULSE,
        "--resources", '{"GPU": 2}',
        out=out,
    )  # fmt: skip
    own = Processes()
    try:
        # The node says when its workers have joined: they are listed at once.
        _wait_for_text(out, "1 worker of this node joined the head: it is ready for work", node)
        assert env.status()["num_workers"] == 3
        own.add_tree(node.pid)
        assert len(own.known) == 2  # the node and its worker
        listed = env.run("list", "nodes", "--json")
        assert listed.returncode == 0, _describe(listed)
        resources = {n["pid"]: n["resources"] for n in json.loads(listed.stdout)}
        # The declared GPUs, and the CPUs and memory the node detected itself.
        assert resources[node.pid]["GPU"] == 2.0
        assert resources[node.pid]["CPU"] == 1.0 and resources[node.pid]["memory"] > 0
        assert _stop(node, signal.SIGTERM) == 0, out.read_text()
        own.assert_gone()
        _wait_for(lambda: env.status()["num_workers"] == 2, "the node's worker to leave")
    finally:
        own.kill_leftovers()
        if node.poll() is None:
            node.kill()
            node.wait()


def test_node_with_a_wrong_secret_fails_naming_the_head(
    up: tuple[Env, str], tmp_path: Path
) -> None:
    env, _ = up
    address = json.loads(env.cluster_file.read_text())["address"]
    wrong = tmp_path / "wrong.secret"
    wrong.write_text(os.urandom(32).hex() + "\n")
    wrong.chmod(0o600)
    result = env.run(
        "node", "--address", address, "--secret-file", str(wrong), "--num-workers", "1",
        timeout_s=60,
    )  # fmt: skip
    assert result.returncode == 1, _describe(result)
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("actorgrid node: ") and address in last and "secret" in last
    assert "Traceback" not in result.stderr


# --- tests with clusters of their own ---------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    env = Env(tmp_path)
    try:
        yield env
    finally:
        env.clean_up()


def test_start_head_in_the_foreground_stops_its_nodes_on_ctrl_c(env: Env) -> None:
    head_out = env.folder / "head.out"
    head = env.popen(
        "start", "--head", "--num-workers", "1", "--pulse-interval", PULSE, out=head_out
    )
    text = _wait_for_text(head_out, "Ctrl-C", head)
    join_line = next(line for line in text.splitlines() if "actorgrid node --address" in line)
    argv = join_line.split()
    address = argv[argv.index("--address") + 1]
    secret_file = Path(argv[argv.index("--secret-file") + 1])
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert not env.cluster_file.exists()  # only with --write-cluster-file

    node_out = env.folder / "node.out"
    node = env.popen(
        "node",
        "--address", address,
        "--secret-file", str(secret_file),
        "--num-workers", "1",
        "--pulse-interval", PULSE,
        out=node_out,
    )  # fmt: skip
    _wait_for_text(node_out, "joined the head", node)
    _wait_for(lambda: len(psutil.Process(node.pid).children()) == 1, "the node's worker")
    _wait_for(lambda: len(psutil.Process(head.pid).children()) == 1, "the head's worker")
    env.processes.add_tree(head.pid)
    env.processes.add_tree(node.pid)

    assert _stop(head, signal.SIGINT) == 0, head_out.read_text()
    assert node.wait(timeout=30) == 0, node_out.read_text()  # the head closed it
    assert "closed this node" in node_out.read_text()
    env.processes.assert_gone()
    assert not secret_file.exists()  # generated, so removed with the head


def test_save_config_then_config(env: Env) -> None:
    first = env.folder / "head.toml"
    result = env.run(
        "start", "--head", "--port", "7001", "--num-workers", "3", "--pulse-interval", "0.5",
        "--save-config", str(first),
    )  # fmt: skip
    assert result.returncode == 0, _describe(result)
    saved = tomllib.loads(first.read_text())
    assert saved == {
        "host": "127.0.0.1",
        "port": 7001,
        "num_workers": 3,
        "dashboard": "127.0.0.1:0",
        "pulse_interval": 0.5,
        "grace": 5.0,
        "max_message_bytes": 1 << 30,
    }
    second = env.folder / "again.toml"
    result = env.run(
        "start", "--head", "--config", str(first), "--num-workers", "1",
        "--save-config", str(second),
    )  # fmt: skip
    assert result.returncode == 0, _describe(result)
    assert tomllib.loads(second.read_text()) == {**saved, "num_workers": 1}  # flags win

    # max_message_bytes takes units on the command line and in a config file.
    capped = env.folder / "capped.toml"
    capped.write_text('max_message_bytes = "64KiB"\n')
    result = env.run(
        "start", "--head", "--config", str(capped), "--save-config", str(capped.with_suffix(".out"))
    )
    assert result.returncode == 0, _describe(result)
    assert tomllib.loads(capped.with_suffix(".out").read_text())["max_message_bytes"] == 65536
    result = env.run("up", "--max-message-bytes", "12 parsecs")
    assert result.returncode == 2, _describe(result)
    assert "a size in bytes, e.g. 1048576 or 64MiB" in result.stderr

    node_file = env.folder / "node.toml"
    secret = env.folder / "s.secret"
    result = env.run(
        "node", "--address", "10.0.0.1:6380", "--resources", '{"GPU": 2, "disk ssd": 0.5}',
        "--secret-file", str(secret), "--save-config", str(node_file),
    )  # fmt: skip
    assert result.returncode == 0, _describe(result)
    node_saved = tomllib.loads(node_file.read_text())
    assert node_saved["resources"] == {"GPU": 2.0, "disk ssd": 0.5}
    assert node_saved["max_message_bytes"] == 1 << 30
    assert node_saved["secret_file"] == str(secret)
    again = env.folder / "node-again.toml"
    result = env.run("node", "--config", str(node_file), "--save-config", str(again))
    assert result.returncode == 0, _describe(result)
    assert tomllib.loads(again.read_text()) == node_saved

    bad = env.folder / "bad.toml"
    bad.write_text('host = "127.0.0.1"\nworkers = 2\nportt = 1\n')
    result = env.run("start", "--head", "--config", str(bad))
    assert result.returncode == 1, _describe(result)
    assert "'portt', 'workers'" in result.stderr and len(result.stderr.splitlines()) == 1

    result = env.run("node", "--address", "h:1", "--resources", "[1]", "--save-config", "x")
    assert result.returncode == 2, _describe(result)
    assert '{"GPU": 2}' in result.stderr


def test_up_with_a_config_starts_nodes_and_down_stops_everything(env: Env) -> None:
    config = env.folder / "cluster.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [head]
            num_workers = 0
            pulse_interval = {PULSE}
            [nodes]
            hosts = ["local-a", "local-b"]
            num_workers = 1
            command = "{{python}} -m actorgrid.cli node --address {{address}} --num-workers {{num_workers}} --secret-stdin --pulse-interval {PULSE}"
            """
        )
    )
    result = env.run("up", "--config", str(config))
    if env.cluster_file.exists():
        env.record_cluster()
    assert result.returncode == 0, _describe(result)
    assert result.stdout.count("node joined:") == 2
    recorded = json.loads(env.cluster_file.read_text())
    assert recorded["nodes"] == ["local-a", "local-b"]
    report = env.status()
    assert len(report["nodes"]) == 2  # type: ignore[arg-type]
    assert report["num_workers"] == 2
    assert len(env.processes.known) == 5  # the head, two nodes and their workers

    down = env.run("down")
    assert down.returncode == 0, _describe(down)
    assert "stopped the cluster head" in down.stdout
    env.processes.assert_gone()
    assert not env.cluster_file.exists()
    assert not env.cluster_file.with_name("cluster.processes.json").exists()
    assert not env.cluster_file.with_name("cluster.secret").exists()

    again = env.run("down")
    assert again.returncode == 1, _describe(again)
    assert "no cluster is running" in again.stderr


def test_up_fails_cleanly_when_a_node_does_not_start(env: Env) -> None:
    config = env.folder / "cluster.toml"
    config.write_text(
        textwrap.dedent(
            """
            [head]
            pulse_interval = 0.2
            [nodes]
            hosts = ["broken"]
            command = "{python} -c 'import sys; print(\\"no such node\\"); sys.exit(3)'"
            """
        )
    )
    result = env.run("up", "--config", str(config))
    assert result.returncode == 1, _describe(result)
    assert "the node on broken exited with status 3" in result.stderr
    assert "no such node" in result.stderr  # the tail of its log
    assert not env.cluster_file.exists()
    head_pid = int(result.stdout.split("starting a cluster head (pid ")[1].split(";")[0])
    assert not _alive(head_pid, None)


FIFTY_TASKS = textwrap.dedent(
    """
    import actorgrid as ag

    def square(x):
        return x * x

    ag.init(address="auto")
    print(sum(ag.get([ag.remote(square).remote(i) for i in range(50)], timeout=60)))
    """
)


def test_up_starts_a_worker_per_cpu_and_a_driver_runs_at_once(env: Env) -> None:
    result = env.run("up")
    if env.cluster_file.exists():
        env.record_cluster()
    assert result.returncode == 0, _describe(result)
    n = os.cpu_count() or 1
    assert f"{n} worker{'s' if n != 1 else ''} started on this machine, all connected" in (
        result.stdout
    )
    driver = subprocess.run(
        [sys.executable, "-c", FIFTY_TASKS],
        cwd=env.folder,
        env=env.vars,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    assert driver.returncode == 0, driver.stderr
    assert driver.stdout.strip() == str(sum(i * i for i in range(50)))
    assert env.run("down").returncode == 0
    env.processes.assert_gone()


BIG_PUT = textwrap.dedent(
    """
    import sys
    import actorgrid as ag

    def size(data):
        return len(data)

    ag.init(address=sys.argv[1])
    print(ag.get(ag.remote(size).remote(b"x" * 10_000), timeout=60), flush=True)
    for send in (lambda: ag.put(b"x" * 100_000), lambda: ag.remote(size).remote(b"x" * 100_000)):
        try:
            send()
        except ValueError as exc:
            print(exc, flush=True)
    """
)


def test_a_cluster_with_a_small_message_cap_refuses_a_big_put(env: Env) -> None:
    result = env.run("up", "--num-workers", "1", "--max-message-bytes", "64KiB")
    if env.cluster_file.exists():
        env.record_cluster()
    assert result.returncode == 0, _describe(result)
    recorded = json.loads(env.cluster_file.read_text())
    # A driver learns the cap from the head, whichever way it finds the cluster.
    by_address = {**env.vars, "ACTORGRID_SECRET": recorded["secret"]}
    for address, variables in (("auto", env.vars), (recorded["address"], by_address)):
        driver = subprocess.run(
            [sys.executable, "-c", BIG_PUT, address],
            cwd=env.folder,
            env=variables,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
        assert driver.returncode == 0, driver.stderr
        small, put, call = driver.stdout.strip().splitlines()
        assert small == "10000"
        assert "ag.put() got a value that serializes to 100" in put
        assert "the arguments of size() serialize to 100" in call
        for refused in (put, call):
            assert "over max_message_bytes=65536" in refused
            assert "actorgrid up --max-message-bytes" in refused
    assert env.run("down").returncode == 0
    env.processes.assert_gone()


def test_commands_without_a_cluster_fail_in_one_line(env: Env) -> None:
    for argv in (["down"], ["status"], ["list", "nodes"], ["kill", "x"], ["cancel", "abc"]):
        result = env.run(*argv)
        assert result.returncode == 1, _describe(result)
        assert len(result.stderr.splitlines()) == 1, _describe(result)
        assert "actorgrid up" in result.stderr


def test_start_and_node_with_mutual_tls(env: Env) -> None:
    import trustme

    ca = trustme.CA()
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(env.folder / "m.pem")
    ca.cert_pem.write_to_path(env.folder / "ca.pem")
    tls = ["--tls", "--certfile", "m.pem", "--keyfile", "m.pem", "--cafile", "ca.pem"]
    head_out = env.folder / "head.out"
    head = env.popen("start", "--head", "--pulse-interval", PULSE, *tls, out=head_out)
    text = _wait_for_text(head_out, "Ctrl-C", head)
    argv = next(line for line in text.splitlines() if "actorgrid node --address" in line).split()
    address, secret_file = argv[argv.index("--address") + 1], argv[argv.index("--secret-file") + 1]

    # A node without TLS is refused, and told why.
    plain = env.run(
        "node", "--address", address, "--secret-file", secret_file, "--num-workers", "1",
        timeout_s=60,
    )  # fmt: skip
    assert plain.returncode == 1, _describe(plain)
    assert "TLS" in plain.stderr.strip().splitlines()[-1]
    # --tls without its files is a usage error that names them.
    half = env.run("node", "--address", address, "--secret-file", secret_file, "--tls")
    assert half.returncode == 1 and "--certfile" in half.stderr

    node_out = env.folder / "node.out"
    node = env.popen(
        "node", "--address", address, "--secret-file", secret_file, "--num-workers", "1",
        "--pulse-interval", PULSE, *tls, out=node_out,
    )  # fmt: skip
    _wait_for_text(node_out, "joined the head", node)
    env.processes.add_tree(head.pid)
    _wait_for(lambda: len(psutil.Process(node.pid).children()) == 1, "the node's worker")
    env.processes.add_tree(node.pid)
    assert _stop(head, signal.SIGTERM) == 0, head_out.read_text()
    assert node.wait(timeout=30) == 0, node_out.read_text()
    env.processes.assert_gone()
