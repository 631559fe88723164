"""A link's counts of fire-and-forget calls and messages (``_runtime/confirms.py``), with no
network: what the sender counts until its worker confirms it, what the worker confirms, and
what a lost link leaves to report."""

from __future__ import annotations

from actorgrid._protocol.ids import ActorId
from actorgrid._runtime.confirms import LinkSends

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
