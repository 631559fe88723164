"""``actorgrid dashboard``: print the URL (token included) of the running cluster's live
dashboard, from the cluster file ``actorgrid up`` wrote."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

import actorgrid as ag

from ._common import ClusterPaths, fail

if TYPE_CHECKING:
    _Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["add_dashboard"]


def add_dashboard(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser(
        "dashboard",
        help="print the URL of the running cluster's live dashboard (token included)",
        description=(
            "Print the URL of the live dashboard that the head of the cluster `actorgrid up` "
            "started serves (on 127.0.0.1: open it on this machine, or forward its port). The "
            "URL carries the token derived from the cluster secret: treat it as the secret. "
            "Prometheus can scrape /metrics on the same port with that token as a bearer token."
        ),
    )
    parser.add_argument(
        "--token", action="store_true", help="print the token only (for a Prometheus scrape)"
    )
    parser.set_defaults(handler=_run_dashboard)


def _run_dashboard(args: argparse.Namespace) -> int:
    path = ClusterPaths.default().cluster_file
    try:
        recorded = ag.ClusterFile.load(path)
    except ag.NotInitializedError as exc:
        return fail("dashboard", str(exc))
    if not recorded.dashboard_url:
        return fail(
            "dashboard",
            f"the cluster recorded in {path} (head {recorded.address}) was started without a "
            "dashboard (by an older actorgrid); restart it: `actorgrid down && actorgrid up`",
        )
    url = recorded.dashboard_url
    print(url.partition("?token=")[2] if args.token else url)
    return 0
