"""A link's counts of fire-and-forget calls and messages (``_runtime/confirms.py``), with no
network: what the sender counts until its worker confirms it, what the worker confirms, and
what a lost link leaves to report."""

from __future__ import annotations

import math

import trio
import trio.testing

from actorgrid._protocol.ids import ActorId
from actorgrid._protocol.messages import FinishedSends
from actorgrid._runtime.confirms import REPORT_S, FinishedReports, LinkSends
from actorgrid._scheduler.flow import ReceiveCredits, SendCredits

A = ActorId(b"a" * 16)
B = ActorId(b"b" * 16)


def test_the_sender_counts_until_confirmed_and_forgets_an_actor_at_zero() -> None:
    sends = LinkSends()
    for _ in range(3):
        sends.sent_call(A)
    sends.sent_message(B)
    assert sends.unconfirmed() == 4
    sends.confirmed(A, 2)
    sends.confirmed(B, 1)
    assert sends.unconfirmed() == 1
    assert sends.take_unconfirmed() == {A: (1, False)}  # B's entry went at zero
    assert sends.unconfirmed() == 0


def test_a_confirmation_of_more_than_was_counted_leaves_nothing_behind() -> None:
    sends = LinkSends()
    sends.sent_message(A)
    sends.confirmed(A, 5)  # (a refusal of a send this process did not count)
    sends.confirmed(B, 1)
    assert sends.take_unconfirmed() == {}


def test_the_worker_reports_what_it_finished_once_per_flush() -> None:
    told: list[str] = []
    sends = LinkSends()
    sends.finished(A)  # nobody to tell: a process hosting no actors counts nothing
    assert sends.take_finished() is None
    sends.on_first_done = lambda: told.append("first")
    sends.finished(A)  # a quiet call returned (any thread)
    sends.taken(B)  # an agent took a message (the loop)
    sends.finished(A)
    assert told == ["first"]  # one note per report, not per call
    report = sends.take_finished()
    assert report is not None
    assert dict(zip(report.actor_ids, report.counts, strict=True)) == {A: 2, B: 1}
    assert sends.take_finished() is None
    sends.finished(B)
    assert told == ["first", "first"]

    sender = LinkSends()
    for _ in range(3):
        sender.sent_call(A)
    sender.sent_call(B)
    sender.on_finished(report)
    assert sender.take_unconfirmed() == {A: (1, False)}


def test_a_report_grants_the_credits_held_back_so_a_quiet_stream_leaves_no_entry() -> None:
    # A sender's stream of 3 messages to A, 1 to B: below a batch of credits (window 16: 4),
    # which the worker held back until its report of what the agents took.
    send: SendCredits[ActorId] = SendCredits(window=16)
    worker = LinkSends()
    worker.on_first_done = lambda: None
    worker.held_credits = ReceiveCredits(window=16)
    for actor_id in (A, A, A, B):
        assert send.try_take(actor_id)
        assert worker.held_credits.taken(actor_id) == 0  # taken in: held back
    for actor_id in (A, A, B):
        worker.taken(actor_id)  # the agents took all but one of A's so far
    report = worker.take_finished()
    assert report is not None
    assert dict(zip(report.actor_ids, report.credits, strict=True)) == {A: 3, B: 1}
    for actor_id, n in zip(report.actor_ids, report.credits, strict=True):
        send.grant(actor_id, n)
    assert len(send) == 0 and len(worker.held_credits) == 0  # nothing left at either end
    worker.taken(A)  # its last one: nothing held back, so the report carries no credits
    report = worker.take_finished()
    assert report is not None and report.credits == () and report.counts == (1,)


class _Link:
    """A peer as FinishedReports sees it: its counts, and what it sends."""

    def __init__(self, reports: FinishedReports) -> None:
        self.sends = LinkSends()
        self.sends.on_first_done = lambda: reports.note(self)
        self.sent: list[FinishedSends] = []

    def send(self, msg: FinishedSends) -> None:
        self.sent.append(msg)


async def test_a_worker_confirms_once_per_period_and_sleeps_while_nothing_finishes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    reports = FinishedReports()
    link = _Link(reports)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reports.serve, lambda fn: fn())
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        for _ in range(3):
            link.sends.finished(A)
        await trio.sleep(REPORT_S / 2)
        assert link.sent == []  # not one frame per call
        await trio.sleep(REPORT_S)
        assert [dict(zip(m.actor_ids, m.counts, strict=True)) for m in link.sent] == [{A: 3}]
        # Nothing more to confirm: it sleeps until something finishes, with no timer of its
        # own (a virtual day of a simulation would otherwise wake it every REPORT_S).
        await trio.testing.wait_all_tasks_blocked()
        assert trio.lowlevel.current_statistics().seconds_to_next_deadline == math.inf
        await trio.sleep(3600)
        assert len(link.sent) == 1
        link.sends.taken(B)
        await trio.sleep(REPORT_S * 2)
        assert [m.actor_ids for m in link.sent] == [(A,), (B,)]
        assert trio.current_time() - start > 3600
        nursery.cancel_scope.cancel()
