"""What workers print reaches the driver that sent the call: prefixed with where it ran,
folded when repeated, and not lost when the worker dies right after printing.

One embedded cluster (two workers) for the module; the driver's output is this process's
stdout and stderr, read through pytest's ``capsys``.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import sys
import time

import pytest

import actorgrid as ag

OUTPUT_TIMEOUT_S = 30.0


class Output:
    """What this process has printed so far (capsys hands each part out once)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys
        self.out = ""
        self.err = ""

    def wait_for(self, check: re.Pattern[str] | str, stream: str = "out") -> str:
        """Until ``check`` (a regex or a substring) is in the stream; the stream so far."""
        deadline = time.monotonic() + OUTPUT_TIMEOUT_S
        while True:
            got = self._capsys.readouterr()
            self.out += got.out
            self.err += got.err
            text = self.out if stream == "out" else self.err
            found = check.search(text) if isinstance(check, re.Pattern) else check in text
            if found:
                return text
            assert time.monotonic() < deadline, f"{check!r} not in the driver's {stream}:\n{text}"
            time.sleep(0.05)


@ag.remote
def shout(word: str) -> tuple[int, str]:
    print(f"hello {word}")
    print(f"complaint {word}", file=sys.stderr)
    logging.getLogger("user.code").warning("logged %s", word)
    return os.getpid(), socket.gethostname()


@ag.remote
class Scribe:
    def write(self, text: str) -> int:
        print(text)
        return os.getpid()


def test_a_print_in_a_task_reaches_the_driver_with_its_prefix(
    cluster: ag.Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    output = Output(capsys)
    pid, host = ag.get(shout.remote("prefix-1"))
    output.wait_for(f"(shout pid={pid} node={host}) hello prefix-1\n")
    output.wait_for(f"(shout pid={pid} node={host}) complaint prefix-1\n", "err")
    err = output.wait_for("logged prefix-1", "err")
    assert re.search(rf"\(shout pid={pid} node={host}\) .*WARNING user.code: logged prefix-1", err)
    # Each line once, and the output of a call goes nowhere else.
    assert output.out.count("hello prefix-1") == 1


def test_an_actors_output_is_prefixed_with_its_name_or_class(
    cluster: ag.Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    output = Output(capsys)
    named = Scribe.options(name="scribe-prefix").remote()
    pid = ag.get(named.write.remote("from the named one"))
    output.wait_for(f"(scribe-prefix pid={pid} node={socket.gethostname()}) from the named one")
    anonymous = Scribe.remote()
    pid = ag.get(anonymous.write.remote("from the unnamed one"))
    output.wait_for(f"(Scribe pid={pid} node={socket.gethostname()}) from the unnamed one")
    ag.kill(named)
    ag.kill(anonymous)


@ag.remote(max_retries=0)
def last_words(token: str) -> None:
    print(f"last words {token}")
    os.kill(os.getpid(), signal.SIGKILL)


def test_output_printed_just_before_the_worker_is_killed_still_arrives(
    cluster: ag.Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    output = Output(capsys)
    with pytest.raises(ag.WorkerDiedError):
        ag.get(last_words.remote("t-8812"), timeout=60)
    output.wait_for("last words t-8812\n")


@ag.remote
def repeat(line: str, times: int) -> int:
    for _ in range(times):
        print(line)
    return os.getpid()


def test_ten_thousand_identical_lines_from_two_workers_are_folded(
    cluster: ag.Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    output = Output(capsys)
    line = "the same line, again and again"
    deadline = time.monotonic() + OUTPUT_TIMEOUT_S
    while len(cluster.workers()) < 2:  # a worker killed by an earlier test is coming back
        assert time.monotonic() < deadline, "the cluster did not get its two workers back"
        time.sleep(0.05)
    # num_cpus=1 each on two one-CPU workers: one task per worker, both at once.
    pids = set(ag.get([repeat.remote(line, 5000), repeat.remote(line, 5000)]))
    assert len(pids) == 2
    out = output.wait_for(re.compile(r"\[repeated \d+x across cluster\]"))
    shown = [x for x in out.splitlines() if line in x]
    assert len(shown) == 2, shown  # the first one, then the count
    assert shown[0].endswith(f") {line}")
    count = int(re.search(r"\[repeated (\d+)x", shown[1]).group(1))  # type: ignore[union-attr]
    assert count == 9999
