"""How failures reach the caller: remote exceptions, dead actors, values that cannot be
serialized, with messages that say what happened and where."""

from __future__ import annotations

import os
import threading

import pytest
import trio

import actorgrid as ag

CLUSTER_OPTIONS = {"num_workers": 2}

pytestmark = pytest.mark.usefixtures("cluster")


class QuotaExceeded(Exception):
    """A user exception with extra constructor arguments and attributes."""

    def __init__(self, user, limit):
        super().__init__(user, limit)
        self.user = user
        self.limit = limit
        self.noted = f"{user} over {limit}"


class KeywordOnlyError(Exception):
    """An exception that cannot be rebuilt from its args (a classic pickling trap)."""

    def __init__(self, *, code):
        super().__init__(f"failed with code {code}")
        self.code = code


@ag.remote
def raise_value_error_in_task(text):
    raise ValueError(text)


@ag.remote
async def raise_in_async_task():
    raise KeyError("async key")


@ag.remote
def raise_quota_exceeded():
    raise QuotaExceeded("alice", 10)


@ag.remote
def raise_keyword_only():
    raise KeywordOnlyError(code=7)


@ag.remote
def identity(x):
    return x


@ag.remote
class Account:
    def __init__(self, balance):
        if balance < 0:
            raise ValueError(f"negative opening balance {balance}")
        self.balance = balance

    def withdraw(self, amount):
        if amount > self.balance:
            raise QuotaExceeded("account", self.balance)
        self.balance -= amount
        return self.balance

    async def withdraw_async(self, amount):
        return self.withdraw(amount)

    def get(self):
        return self.balance


# --- remote exceptions ---------------------------------------------------------------------------


def test_remote_exception_is_remote_error_and_original_type(cluster) -> None:
    with pytest.raises(ValueError, match="bad input 42") as info:
        ag.get(raise_value_error_in_task.remote("bad input 42"))
    err = info.value
    assert isinstance(err, ag.RemoteError)
    assert isinstance(err, ag.ActorgridError)
    assert err.args == ("bad input 42",)
    assert "raise_value_error_in_task" in err.remote_traceback
    assert "ValueError: bad input 42" in err.remote_traceback
    pids = {str(w.pid) for w in cluster.workers()}
    assert "worker" in err.where
    assert any(f"pid {pid}" in err.where for pid in pids), err.where
    assert isinstance(err.cause, ValueError)
    # The text shows the remote traceback and where it ran.
    text = str(err)
    assert "bad input 42" in text
    assert "raise_value_error_in_task" in text
    assert err.where in text


def test_async_task_exception() -> None:
    with pytest.raises(KeyError) as info:
        ag.get(raise_in_async_task.remote())
    assert isinstance(info.value, ag.RemoteError)
    assert "raise_in_async_task" in info.value.remote_traceback


def test_user_exception_keeps_its_type_args_and_attributes() -> None:
    with pytest.raises(QuotaExceeded) as info:
        ag.get(raise_quota_exceeded.remote())
    err = info.value
    assert isinstance(err, ag.RemoteError)
    assert err.args == ("alice", 10)
    assert (err.user, err.limit, err.noted) == ("alice", 10, "alice over 10")
    assert "raise_quota_exceeded" in err.remote_traceback
    assert "QuotaExceeded" in err.type_name


def test_exception_whose_init_takes_other_arguments_keeps_its_type() -> None:
    # Default pickling would call KeywordOnlyError("failed with code 7"), which fails.
    with pytest.raises(KeywordOnlyError) as info:
        ag.get(raise_keyword_only.remote())
    err = info.value
    assert isinstance(err, ag.RemoteError)
    assert err.code == 7
    assert err.args == ("failed with code 7",)
    assert "failed with code 7" in str(err)
    assert "raise_keyword_only" in err.remote_traceback


class InsufficientFunds(Exception):
    def __init__(self, account, needed):
        super().__init__(f"account {account} needs {needed} more")
        self.account = account
        self.needed = needed


@ag.remote
class Bank:
    def withdraw(self, account, amount):
        raise InsufficientFunds(account, amount)


def test_custom_exception_is_caught_by_its_type_with_its_attributes(cluster) -> None:
    bank = Bank.remote()
    try:
        ag.get(bank.withdraw.remote("alice", 30), timeout=30)
    except InsufficientFunds as exc:
        caught = exc
    else:
        pytest.fail("InsufficientFunds was not raised")
    assert isinstance(caught, ag.RemoteError)
    assert (caught.account, caught.needed) == ("alice", 30)
    assert "account alice needs 30 more" in str(caught)
    assert "Bank.withdraw" in caught.where
    assert "in withdraw" in caught.remote_traceback
    assert isinstance(caught.cause, InsufficientFunds)


class HoldsALock(Exception):
    def __init__(self, text):
        super().__init__(text)
        self.lock = threading.Lock()


@ag.remote
def raise_holds_a_lock():
    raise HoldsALock("locked out")


def test_exception_that_cannot_be_pickled_is_a_plain_remote_error() -> None:
    with pytest.raises(ag.RemoteError) as info:
        ag.get(raise_holds_a_lock.remote(), timeout=30)
    err = info.value
    assert not isinstance(err, HoldsALock)
    assert err.cause is None
    assert err.type_name.endswith("HoldsALock")
    assert "locked out" in str(err)
    assert "raise_holds_a_lock" in err.remote_traceback


def test_actor_method_exception_leaves_the_actor_alive() -> None:
    account = Account.remote(5)
    with pytest.raises(QuotaExceeded) as info:
        ag.get(account.withdraw.remote(50))
    assert info.value.limit == 5
    assert "withdraw" in info.value.remote_traceback
    assert "Account.withdraw" in info.value.where
    with pytest.raises(QuotaExceeded):
        ag.get(account.withdraw_async.remote(50))
    assert ag.get(account.withdraw.remote(2)) == 3


@ag.remote
def call_failing():
    return ag.get(raise_value_error_in_task.remote("deep"))


def test_remote_error_passed_through_a_second_task_keeps_its_text() -> None:
    with pytest.raises(ag.RemoteError, match="deep") as info:
        ag.get(call_failing.remote())
    assert "call_failing" in info.value.remote_traceback
    assert "raise_value_error_in_task" in str(info.value)


def test_remote_error_passed_through_a_second_task_keeps_its_type() -> None:
    with pytest.raises(ValueError, match="deep") as info:
        ag.get(call_failing.remote())
    assert isinstance(info.value, ag.RemoteError)


def test_custom_exception_keeps_its_type_through_a_second_task() -> None:
    @ag.remote
    def relay():
        return ag.get(raise_keyword_only.remote())

    with pytest.raises(KeywordOnlyError) as info:
        ag.get(relay.remote(), timeout=30)
    assert info.value.code == 7
    assert "relay" in info.value.remote_traceback


def test_remote_error_pickles() -> None:
    import pickle

    with pytest.raises(QuotaExceeded) as info:
        ag.get(raise_quota_exceeded.remote())
    copy = pickle.loads(pickle.dumps(info.value))
    assert isinstance(copy, QuotaExceeded)
    assert isinstance(copy, ag.RemoteError)
    assert copy.remote_traceback == info.value.remote_traceback
    assert copy.where == info.value.where


# --- dead actors ------------------------------------------------------------------------------------


def test_calls_after_kill_raise_actor_died_error() -> None:
    account = Account.remote(10)
    assert ag.get(account.get.remote()) == 10
    ag.kill(account)
    with pytest.raises(ag.ActorDiedError):
        ag.get(account.get.remote(), timeout=30)
    with pytest.raises(ag.ActorDiedError):
        ag.get(account.withdraw_async.remote(1), timeout=30)
    ag.kill(account)  # killing a dead actor is harmless


def test_calls_queued_behind_a_kill_raise_actor_died_error() -> None:
    @ag.remote
    class Slow:
        def nap(self, seconds):
            import time

            time.sleep(seconds)
            return "woke"

    slow = Slow.remote()
    refs = [slow.nap.remote(0.3) for _ in range(5)]
    ag.kill(slow)
    outcomes = []
    for ref in refs:
        try:
            outcomes.append(ag.get(ref, timeout=30))
        except ag.ActorDiedError:
            outcomes.append("died")
    # The call running when the kill arrived may finish; none queued behind it runs.
    assert outcomes.count("died") >= 4, outcomes


def test_failing_constructor_gives_actor_died_error_with_its_message() -> None:
    account = Account.remote(-3)
    with pytest.raises(ag.ActorDiedError) as info:
        ag.get(account.get.remote(), timeout=30)
    text = str(info.value)
    assert "negative opening balance -3" in text
    assert "constructor" in text
    # Later calls fail the same way, and do not hang.
    with pytest.raises(ag.ActorDiedError, match="negative opening balance"):
        ag.get(account.withdraw.remote(1), timeout=30)


# --- serialization -------------------------------------------------------------------------------


def test_unpicklable_argument_fails_at_the_call_site() -> None:
    lock = threading.Lock()
    with pytest.raises(ag.SerializationError) as info:
        identity.remote(lock)
    err = info.value
    assert isinstance(err, TypeError)
    text = str(err)
    assert "'x'" in text
    assert "could not be serialized" in text
    with pytest.raises(ag.SerializationError, match=r"'x'.*could not be serialized"):
        identity.remote(x=lock)


def test_unpicklable_argument_names_the_argument_among_several() -> None:
    @ag.remote
    def three(first, second, third=None):
        return first

    with pytest.raises(ag.SerializationError, match="'second'") as info:
        three.remote(1, threading.Lock(), third=3)
    assert "'first'" not in str(info.value)
    with pytest.raises(ag.SerializationError, match="'third'"):
        three.remote(1, 2, third=threading.Lock())


def test_unpicklable_argument_to_actors_fails_at_the_call_site() -> None:
    with pytest.raises(ag.SerializationError, match=r"'balance'.*could not be serialized"):
        Account.remote(threading.Lock())
    account = Account.remote(1)
    with pytest.raises(ag.SerializationError, match=r"'amount'.*could not be serialized"):
        account.withdraw.remote(threading.Lock())
    assert ag.get(account.get.remote()) == 1


def test_unpicklable_return_value_is_a_serialization_error_on_get() -> None:
    @ag.remote
    def make_lock():
        return threading.Lock()

    with pytest.raises(ag.SerializationError, match="could not be serialized") as info:
        ag.get(make_lock.remote(), timeout=30)
    assert isinstance(info.value, TypeError)
    assert "make_lock" in str(info.value)

    @ag.remote
    class SyncLockMaker:
        def make(self):
            return threading.Lock()

    with pytest.raises(ag.SerializationError, match="could not be serialized"):
        ag.get(SyncLockMaker.remote().make.remote(), timeout=30)
    # The workers are fine afterwards.
    assert ag.get(identity.remote(os.sep)) == os.sep


@ag.remote
async def make_lock_async():
    return threading.Lock()


@ag.remote
class LockMaker:
    async def make(self):
        return threading.Lock()


def test_unpicklable_return_value_of_async_code_is_a_serialization_error_on_get() -> None:
    with pytest.raises(ag.SerializationError):
        ag.get(make_lock_async.remote(), timeout=30)
    with pytest.raises(ag.SerializationError):
        ag.get(LockMaker.remote().make.remote(), timeout=30)


# --- arguments checked at the call site ----------------------------------------------------------


@ag.remote
def add(a: int, b: int) -> int:
    return a + b


@ag.remote(max_restarts=-1)
async def greeter(ctx: ag.Context, greeting: str, *, times: int = 1) -> None:
    async for msg in ctx.mailbox:
        await ctx.reply(greeting * times + msg)


def test_bad_arguments_fail_at_remote_with_the_signature() -> None:
    with pytest.raises(TypeError) as info:
        add.remote(1)
    text = str(info.value)
    assert "add(a: int, b: int) -> int" in text
    assert "missing a required argument: 'b'" in text
    with pytest.raises(TypeError, match=r"add\(a: int, b: int\).*too many positional"):
        add.remote(1, 2, 3)
    with pytest.raises(TypeError, match=r"add\(a: int, b: int\).*unexpected keyword argument 'c'"):
        add.remote(1, 2, c=3)
    assert ag.get(add.remote(1, b=2), timeout=30) == 3


def test_bad_arguments_to_a_coroutine_actor_fail_at_remote_without_ctx() -> None:
    with pytest.raises(TypeError) as info:
        greeter.remote()
    text = str(info.value)
    assert "greeter(greeting: str, *, times: int = 1) -> None" in text
    assert "ctx" not in text
    with pytest.raises(TypeError, match="unexpected keyword argument 'count'"):
        greeter.remote("hi ", count=2)
    ref = greeter.remote("hi ", times=2)
    assert ag.ask(ref, "you", timeout=30) == "hi hi you"
    ag.kill(ref)


def test_bad_arguments_to_an_actor_class_and_its_methods_fail_at_remote() -> None:
    with pytest.raises(TypeError, match=r"Account\(balance\).*missing a required argument"):
        Account.remote()
    account = Account.remote(5)
    with pytest.raises(TypeError) as info:
        account.withdraw.remote(1, 2)
    text = str(info.value)
    assert "Account.withdraw(amount)" in text
    assert "too many positional arguments" in text
    with pytest.raises(TypeError, match=r"Account.get\(\).*unexpected keyword argument 'x'"):
        account.get.remote(x=1)
    # Nothing was sent: the actor saw none of those calls.
    assert ag.get(account.withdraw.remote(amount=2), timeout=30) == 3


# --- code that cannot be shipped -----------------------------------------------------------------

_GLOBAL_LOCK = threading.Lock()


def test_closure_capturing_a_lock_names_the_function_and_the_variable() -> None:
    guard = threading.Lock()

    @ag.remote
    def guarded(x):
        with guard:
            return x

    with pytest.raises(ag.SerializationError) as info:
        guarded.remote(1)
    err = info.value
    assert isinstance(err, TypeError)
    text = str(err)
    assert "guarded" in text
    assert "'guard'" in text
    assert "_thread.lock" in text


def test_global_lock_used_by_a_function_names_the_global() -> None:
    @ag.remote
    def uses_global(x):
        with _GLOBAL_LOCK:
            return x

    with pytest.raises(ag.SerializationError, match=r"global '_GLOBAL_LOCK' used by .*uses_global"):
        uses_global.remote(1)


def test_actor_class_capturing_a_lock_names_the_method_and_the_variable() -> None:
    guard = threading.Lock()

    @ag.remote
    class Guarded:
        def get(self):
            with guard:
                return 1

    with pytest.raises(ag.SerializationError) as info:
        Guarded.remote()
    text = str(info.value)
    assert "actor class" in text and "Guarded" in text
    assert "'guard' captured by" in text and "Guarded.get" in text
    # The cluster is fine: other code still ships.
    assert ag.get(identity.remote(2), timeout=30) == 2


# --- what ag.get and ag.wait take ----------------------------------------------------------------


def test_get_and_wait_say_what_they_take() -> None:
    with pytest.raises(
        TypeError, match=r"ag.get\(\) takes an ObjectRef or a list of ObjectRefs.* not int 5"
    ):
        ag.get(5)
    ref = identity.remote(1)
    with pytest.raises(TypeError, match=r"ag.get\(\) takes .*item 1 of the list is str 'x'"):
        ag.get([ref, "x"])
    with pytest.raises(
        TypeError, match=r"ag.wait\(\) takes a list of ObjectRefs, not one ObjectRef"
    ):
        ag.wait(ref)
    with pytest.raises(TypeError, match=r"ag.wait\(\) takes a list of ObjectRefs.* not NoneType"):
        ag.wait(None)
    assert ag.get((r for r in [ref]), timeout=30) == [1]  # any iterable of refs

    async def twins() -> None:
        with pytest.raises(TypeError, match=r"ag.get_async\(\) takes an ObjectRef or a list"):
            await ag.get_async(5)
        with pytest.raises(TypeError, match=r"ag.wait_async\(\) takes a list of ObjectRefs"):
            await ag.wait_async(5)

    trio.run(twins)


def test_base_class_capturing_a_lock_is_named_too() -> None:
    guard = threading.Lock()

    class Base:
        def locked(self):
            with guard:
                return 1

    @ag.remote
    class Derived(Base):
        def get(self):
            return self.locked()

    with pytest.raises(ag.SerializationError, match=r"'guard' captured by .*Base.locked"):
        Derived.remote()
