"""Batch messages of the hot path: many answers to one caller in one message.

A worker that runs a burst of calls or tasks from one caller (``[a.ping.remote() for _ in
range(N)]``, ``[f.remote() for ...]``) answers the calls its pool threads finished while its
loop was busy in one TaskResults, encoded once (``hotcodec.py``) and handled by the caller in
one loop, rather than one TaskResult message, envelope and dispatch per call. A lone call is
still answered by a TaskResult, straight from its pool thread. Part of the closed union in
``messages.py``.
"""

import attrs

from .calls import TaskResult


@attrs.frozen
class TaskResults:
    """Sent by a worker instead of several TaskResult to one caller (``handle.method.remote()``
    and ``f.remote()`` bursts): each is handled exactly as its own TaskResult, in order."""

    results: tuple[TaskResult, ...]
