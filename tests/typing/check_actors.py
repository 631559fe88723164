"""Actor calls as users type them, with ``actorgrid.mypy_plugin`` enabled: checked by mypy
(strict), never run. Each ``# type: ignore[...]`` marks a call mypy must reject: with
``warn_unused_ignores`` on, a check that stops catching it fails ``nox -s typecheck``.
"""

from __future__ import annotations

from typing import Any, assert_type

import trio

import actorgrid as ag


class _Account:
    def __init__(self, owner: str, balance: int = 0) -> None:
        self.owner = owner
        self.balance = balance

    def deposit(self, amount: int, *, note: str = "") -> int:
        self.balance += amount
        return self.balance

    async def audit(self, limit: int) -> list[str]:
        await trio.sleep(0)
        return [self.owner] * limit

    def _secret(self) -> None: ...


Account = ag.remote(_Account)


@ag.remote(max_restarts=3)
class Ledger:
    def __init__(self, name: str) -> None:
        self.name = name
        self.lines: list[str] = []

    def add(self, line: str) -> int:
        self.lines.append(line)
        return len(self.lines)


def actor_classes() -> None:
    # The constructor is checked, through .options() too.
    account = Account.remote("alice", balance=5)
    assert_type(account, ag.ActorHandle[_Account])
    assert_type(Account.options(name="a").remote("bob"), ag.ActorHandle[_Account])
    Account.remote()  # type: ignore[call-arg]
    Account.remote(5)  # type: ignore[arg-type]
    Account.options(num_cpus=1).remote("x", balanse=1)  # type: ignore[call-arg]

    # So is every method call through the handle, and its result is typed.
    ref = account.deposit.remote(10, note="pay")
    assert_type(ref, ag.ObjectRef[int])
    assert_type(ag.get(ref), int)
    assert_type(account.audit.remote(2), ag.ObjectRef[list[str]])  # async: the awaited value
    account.deposit.remote("ten")  # type: ignore[arg-type]
    account.deposit.remote(1, memo="x")  # type: ignore[call-arg]
    account.deposit.remote()  # type: ignore[call-arg]
    account.withdraw.remote(1)  # type: ignore[attr-defined]
    account._secret.remote()  # type: ignore[attr-defined]


def decorated_classes() -> None:
    # @ag.remote on the class itself: .remote and .options are typed the same way.
    ledger = Ledger.remote("main")
    assert_type(ledger, ag.ActorHandle[Ledger])
    assert_type(ledger.add.remote("x"), ag.ObjectRef[int])
    assert_type(Ledger.options(name="l").remote("x"), ag.ActorHandle[Ledger])
    Ledger.remote()  # type: ignore[call-arg]
    ledger.add.remote(1)  # type: ignore[arg-type]


async def trio_usage() -> None:
    account = await Account.options(name="c").remote("carol")
    total = await account.deposit.remote(3)
    assert_type(total, int)
    names = await account.audit.remote(1)
    assert_type(names, list[str])


def untyped_handles() -> None:
    # A handle looked up by name has no class for mypy: its calls are unchecked.
    handle = ag.get_actor("counter")
    assert_type(handle, ag.ActorHandle[Any])
    assert_type(handle.anything.remote(1, x=2), ag.ObjectRef[Any])
