"""Named actors on a live cluster: namespaces, atomic get-or-create, lookups, kill freeing the
name, and unknown names."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import trio

import actorgrid as ag

CLUSTER_OPTIONS = {"num_workers": 2}

pytestmark = pytest.mark.usefixtures("cluster")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@ag.remote
class Counter:
    def __init__(self, start=0):
        self.value = start

    def incr(self):
        self.value += 1
        return self.value

    def get(self):
        return self.value


@ag.remote
async def inbox(ctx: ag.Context, n):
    return [await ctx.mailbox.receive() for _ in range(n)]


@ag.remote
async def first_message(ctx: ag.Context):
    return await ctx.mailbox.receive()


@ag.remote
async def answer_forever(ctx: ag.Context):
    async for msg in ctx.mailbox:
        await ctx.reply(msg)


@ag.remote
def send_by_name(name, message, namespace=None):
    if namespace is None:
        ag.send(name, message)
    else:
        handle = ag.get_actor(name, namespace=namespace)
        ag.send(handle, message)
    return "sent"


@ag.remote
def incr_by_name(name, namespace=None):
    return ag.get(ag.get_actor(name, namespace).incr.remote())


@ag.remote
class Messenger:
    def send(self, name, message):
        ag.send(name, message)
        return "sent"


# --- naming and lookups ---------------------------------------------------------------------------


def test_named_actor_is_found_by_get_actor() -> None:
    name = unique("counter")
    handle = Counter.options(name=name).remote(10)
    assert handle.name == name
    found = ag.get_actor(name)
    assert found == handle
    assert found.actor_id == handle.actor_id
    assert ag.get(found.incr.remote()) == 11
    assert ag.get(handle.get.remote()) == 11
    # Workers find it too.
    assert ag.get(incr_by_name.remote(name)) == 12


def test_namespaces_separate_equal_names() -> None:
    name = unique("shared-name")
    # One at a time: test_actors.py::test_a_burst_of_new_actors_of_one_class covers bursts.
    a = Counter.options(name=name, namespace="ns-a").remote(100)
    assert ag.get(a.get.remote()) == 100
    b = Counter.options(name=name, namespace="ns-b").remote(200)
    assert ag.get(b.get.remote()) == 200
    default = Counter.options(name=name).remote(300)
    assert len({a.actor_id, b.actor_id, default.actor_id}) == 3
    assert ag.get(ag.get_actor(name, namespace="ns-a").get.remote()) == 100
    assert ag.get(ag.get_actor(name, namespace="ns-b").get.remote()) == 200
    assert ag.get(ag.get_actor(name).get.remote()) == 300
    assert ag.get(ag.get_actor(name, namespace=None).get.remote()) == 300
    assert ag.get(incr_by_name.remote(name, "ns-b")) == 201


def test_get_if_exists_returns_the_existing_actor() -> None:
    name = unique("existing")
    first = Counter.options(name=name).remote(5)
    again = Counter.options(name=name, get_if_exists=True).remote(999)
    assert again.actor_id == first.actor_id
    assert ag.get(again.incr.remote()) == 6  # the constructor did not run again


def test_racing_get_if_exists_creators_share_one_actor() -> None:
    name = unique("raced")
    handles: list[ag.ActorHandle | None] = [None] * 8
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def create(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            handles[i] = Counter.options(name=name, get_if_exists=True).remote()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    created = [h for h in handles if h is not None]
    assert len(created) == 8
    assert len({h.actor_id for h in created}) == 1
    values = ag.get([h.incr.remote() for h in created], timeout=30)
    assert sorted(values) == list(range(1, 9))
    assert ag.get(ag.get_actor(name).get.remote()) == 8


def test_racing_get_if_exists_from_tasks_share_one_actor() -> None:
    name = unique("raced-in-tasks")

    @ag.remote
    def create_and_incr(name):
        handle = Counter.options(name=name, get_if_exists=True).remote()
        return handle.actor_id, ag.get(handle.incr.remote())

    results = ag.get([create_and_incr.remote(name) for _ in range(8)], timeout=60)
    assert len({actor_id for actor_id, _ in results}) == 1
    assert sorted(v for _, v in results) == list(range(1, 9))


def test_taken_name_is_a_value_error_naming_it() -> None:
    name = unique("taken")
    Counter.options(name=name).remote()
    # .remote() does not wait for the head: the handle's calls carry the error, and so does
    # a coroutine actor's ref.
    second = Counter.options(name=name).remote()
    try:
        early = second.incr.remote()  # most likely sent before the head has answered
    except ValueError:
        pass  # the answer came first
    else:
        with pytest.raises(ag.ActorDiedError):
            ag.get(early, timeout=30)  # refused at the worker: this actor is never created
    deadline = time.monotonic() + 30
    while True:
        try:
            second.incr.remote()
        except ValueError as exc:
            assert name in str(exc)
            break
        assert time.monotonic() < deadline, "the taken name never failed the handle"
        time.sleep(0.05)
    with pytest.raises(ValueError, match=name):
        ag.get(inbox.options(name=name).remote(1), timeout=30)
    # The holder is unaffected.
    assert ag.get(ag.get_actor(name).incr.remote()) == 1


def test_name_is_registered_when_remote_returns() -> None:
    name = unique("fresh")
    ref = inbox.options(name=name).remote(2)
    ag.send(name, "from the driver")  # no wait between creating and sending
    # A worker has no cached name: it must find it at the head.
    assert ag.get(send_by_name.remote(name, "from a task")) == "sent"
    assert sorted(ag.get(ref, timeout=30)) == ["from a task", "from the driver"]

    cname = unique("fresh-counter")
    Counter.options(name=cname).remote()
    assert ag.get(incr_by_name.remote(cname), timeout=30) == 1


def test_unknown_names_raise_name_not_found_error() -> None:
    name = unique("nobody")
    with pytest.raises(ag.NameNotFoundError, match=name) as info:
        ag.get_actor(name)
    assert isinstance(info.value, LookupError)
    with pytest.raises(ag.NameNotFoundError, match=name):
        ag.send(name, "hello?")
    with pytest.raises(ag.NameNotFoundError, match=name):
        ag.ask(name, "hello?", timeout=5)
    with pytest.raises(ag.NameNotFoundError, match=name):
        ag.get(send_by_name.remote(name, "hello?"), timeout=30)
    # A name in another namespace is not found in the default one.
    Counter.options(name=name, namespace="elsewhere").remote()
    with pytest.raises(ag.NameNotFoundError, match=name):
        ag.get_actor(name)


def test_names_must_be_non_empty_strings() -> None:
    with pytest.raises(ValueError, match="name"):
        Counter.options(name="")
    with pytest.raises(ValueError, match="name"):
        inbox.options(name="")


# --- ending actors frees names ----------------------------------------------------------------------


def test_kill_frees_the_name_at_once() -> None:
    name = unique("killed")
    old = Counter.options(name=name).remote(1)
    assert ag.get(old.incr.remote()) == 2
    ag.kill(old)
    with pytest.raises(ag.ActorDiedError):
        ag.get(old.incr.remote(), timeout=30)
    with pytest.raises(ag.NameNotFoundError, match=name):
        ag.get_actor(name)
    new = Counter.options(name=name).remote(50)  # no get_if_exists: the name must be free
    assert new.actor_id != old.actor_id
    assert ag.get(ag.get_actor(name).incr.remote()) == 51


def test_kill_by_name_lookup_and_from_a_task() -> None:
    name = unique("killed-elsewhere")
    Counter.options(name=name).remote()

    @ag.remote
    def kill_by_name(name):
        ag.kill(ag.get_actor(name))
        return "killed"

    assert ag.get(kill_by_name.remote(name), timeout=30) == "killed"
    with pytest.raises(ag.NameNotFoundError):
        ag.get_actor(name)
    Counter.options(name=name).remote()


def test_coroutine_actor_name_is_freed_when_it_returns() -> None:
    name = unique("short-lived")
    ref = first_message.options(name=name).remote()
    ag.send(name, "only message")
    assert ag.get(ref, timeout=30) == "only message"
    with pytest.raises(ag.NameNotFoundError, match=name):
        ag.get_actor(name)
    again = first_message.options(name=name).remote()
    ag.send(name, "second life")
    assert ag.get(again, timeout=30) == "second life"


def test_killed_coroutine_actor_frees_its_name_and_its_ref_fails() -> None:
    name = unique("killed-coroutine")
    ref = answer_forever.options(name=name).remote()
    assert ag.ask(name, "running?", timeout=30) == "running?"
    ag.kill(ref)
    with pytest.raises(ag.ActorDiedError):
        ag.get(ref, timeout=30)
    with pytest.raises(ag.NameNotFoundError):
        ag.get_actor(name)
    with pytest.raises(ag.ActorDiedError):
        ag.ask(ref, "too late", timeout=30)
    again = inbox.options(name=name).remote(1)
    ag.send(name, "new")
    assert ag.get(again, timeout=30) == ["new"]


@ag.remote
async def create_then_kill_at_once(n):
    """On a worker's loop, each kill is queued right behind its creation, on the same link."""
    refs = []
    for _ in range(n):
        ref = answer_forever.remote()
        await ag.kill_async(ref)
        refs.append(ref)
    died = 0
    with trio.move_on_after(5):
        for ref in refs:
            try:
                await ref
            except ag.ActorDiedError:
                died += 1
    return died


def test_kill_right_after_creating_a_coroutine_actor() -> None:
    assert ag.get(create_then_kill_at_once.remote(3), timeout=60) == 3


def test_send_by_name_reaches_the_new_holder_after_the_name_is_reused() -> None:
    name = unique("reused")
    messenger = Messenger.remote()
    first = first_message.options(name=name).remote()
    assert ag.get(messenger.send.remote(name, "to the first"), timeout=30) == "sent"
    assert ag.get(first, timeout=30) == "to the first"
    second = first_message.options(name=name).remote()
    assert ag.get(messenger.send.remote(name, "to the second"), timeout=30) == "sent"
    assert ag.get(second, timeout=5) == "to the second"


def test_send_to_the_name_of_an_ended_actor_raises() -> None:
    name = unique("ended")
    ref = first_message.options(name=name).remote()
    ag.send(name, "last words")
    assert ag.get(ref, timeout=30) == "last words"
    with pytest.raises(ag.NameNotFoundError, match=name):
        ag.send(name, "anyone there?")


@ag.remote
def kill_named(name):
    ag.kill(ag.get_actor(name))
    return "killed"


def test_a_name_cache_forgets_an_actor_that_another_process_killed() -> None:
    # The driver caches the name; it hears of the kill only from the head, before the kill
    # returns in the task.
    name = unique("killed-elsewhere")
    ref = inbox.options(name=name).remote(2)
    ag.send(name, "first")
    assert ag.get(kill_named.remote(name), timeout=30) == "killed"
    with pytest.raises(ag.NameNotFoundError, match=name):
        ag.send(name, "second")
    with pytest.raises(ag.ActorDiedError):
        ag.get(ref, timeout=30)
