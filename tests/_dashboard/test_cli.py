"""``actorgrid up`` serves the dashboard beside its head and prints its URL; ``actorgrid
dashboard`` prints it again (``--token``: the token alone); ``--dashboard HOST:PORT`` says
where it listens; TLS clusters serve it over HTTPS.
Run as users run them, as separate processes (the helpers of tests/test_cli_cluster.py)."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli_cluster import PULSE, Env, _describe, _wait_for_text

import actorgrid as ag


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    try:
        yield e
    finally:
        e.clean_up()


def _scrape(url: str, context: ssl.SSLContext | None = None) -> str:
    base, _, token = url.partition("?token=")
    request = urllib.request.Request(base + "metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30, context=context) as reply:
        assert reply.status == 200
        return str(reply.read().decode())


def test_up_prints_the_dashboard_url_and_actorgrid_dashboard_prints_it_again(env: Env) -> None:
    result = env.run("up", "--num-workers", "1", "--pulse-interval", PULSE)
    if env.cluster_file.exists():
        env.record_cluster()
    assert result.returncode == 0, _describe(result)
    printed = [line for line in result.stdout.splitlines() if line.startswith("dashboard: ")]
    assert len(printed) == 1, result.stdout
    url = printed[0].removeprefix("dashboard: ")
    assert url.startswith("http://127.0.0.1:")

    again = env.run("dashboard")
    assert again.returncode == 0, _describe(again)
    assert again.stdout.strip() == url
    token = env.run("dashboard", "--token")
    assert token.stdout.strip() == url.partition("?token=")[2]
    recorded = ag.ClusterFile.load(env.cluster_file)
    assert recorded.dashboard_url == url

    assert 'actorgrid_workers{node="' in _scrape(url)
    driver = subprocess.run(
        [sys.executable, "-c", "import actorgrid as ag; print(ag.init('auto').dashboard_url)"],
        env=env.vars,
        cwd=env.folder,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert driver.stdout.strip() == url, _describe(driver)
    down = env.run("down")
    assert down.returncode == 0, _describe(down)
    env.processes.assert_gone()


def test_dashboard_without_a_cluster_fails_in_one_line(env: Env) -> None:
    result = env.run("dashboard")
    assert result.returncode == 1, _describe(result)
    assert len(result.stderr.splitlines()) == 1, _describe(result)
    assert "actorgrid up" in result.stderr


def test_a_tls_cluster_serves_its_dashboard_over_https(env: Env) -> None:
    import trustme

    ca = trustme.CA()
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(env.folder / "m.pem")
    ca.cert_pem.write_to_path(env.folder / "ca.pem")
    tls = ["--tls", "--certfile", "m.pem", "--keyfile", "m.pem", "--cafile", "ca.pem"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = env.folder / "head.out"
    head = env.popen(
        "start",
        "--head",
        "--num-workers",
        "1",
        "--pulse-interval",
        PULSE,
        "--dashboard",
        f"127.0.0.1:{port}",
        *tls,
        out=out,
    )
    try:
        text = _wait_for_text(out, "dashboard: ", head)
        url = next(line for line in text.splitlines() if line.startswith("dashboard: "))[11:]
        assert url.startswith(f"https://127.0.0.1:{port}/?token="), url
        trusting = ssl.create_default_context(cafile=str(env.folder / "ca.pem"))
        assert "\n# TYPE actorgrid_nodes gauge\n" in _scrape(url, trusting)
        with pytest.raises(OSError):  # plain HTTP is not spoken there
            _scrape(url.replace("https://", "http://"))
    finally:
        head.terminate()
        head.wait(timeout=60)
    env.processes.assert_gone()
