"""Ids grouped by a key with lists and lazy deletion (groups.py), and the name cache built
on them: each group hands back its live members once each, and no list outgrows its live
members, however many come and go."""

from __future__ import annotations

from typing import cast

from actorgrid._protocol.ids import ActorId
from actorgrid._protocol.messages import ActorInfo
from actorgrid._scheduler.groups import Groups
from actorgrid._scheduler.names import CachedName, NameCache


def test_a_group_hands_back_its_live_members_once_each_and_stays_small() -> None:
    where: dict[int, str] = {}
    groups: Groups[str, int] = Groups(lambda item, group: where.get(item) == group)
    for i in range(1000):
        where[i] = "a" if i % 2 else "b"
        groups.add(where[i], i)
    for i in range(0, 1000, 4):  # a quarter leaves "b" for good
        del where[i]
        groups.remove("b", i)
    where[1] = "b"  # one moves from "a" to "b" (and back below: listed twice in "a")
    groups.remove("a", 1)
    groups.add("b", 1)
    where[1] = "a"
    groups.remove("b", 1)
    groups.add("a", 1)
    assert sorted(groups.members("a")) == list(range(1, 1000, 2))
    assert sorted(groups.members("b")) == list(range(2, 1000, 4))
    for i in range(2, 1000, 4):  # "b" empties: it is forgotten
        del where[i]
        groups.remove("b", i)
    assert "b" not in groups and groups.members("b") == []
    for i in range(3, 1000, 2):  # churn: stale ids are dropped as they pile up
        del where[i]
        groups.remove("a", i)
        assert len(groups._ids["a"]) <= 2 * len(groups.members("a")) + 17
    assert groups.pop("a") == [1] and len(groups) == 0


def _info(i: int, address: str, name: str = "", namespace: str | None = None) -> ActorInfo:
    return ActorInfo(ActorId(i.to_bytes(4, "big")), address, "coroutine", "f", name, namespace)


def test_the_name_cache_keeps_namespaces_apart_and_forgets_by_actor_and_by_address() -> None:
    cache = NameCache()
    cache[("default", "x")] = _info(1, "w0", "x")
    cache[("other", "x")] = _info(2, "w0", "x", "other")
    cache[("default", "alias")] = _info(1, "w0", "x")  # one actor under two names
    assert cache[("default", "x")].actor_id == cache.get(("default", "alias")).actor_id  # type: ignore[union-attr]
    assert cache[("other", "x")].actor_id == ActorId((2).to_bytes(4, "big"))
    assert ("other", "alias") not in cache and ("default", "x") in cache
    cache[("default", "y")] = _info(3, "w0", "y")
    cache[("default", "y")] = _info(3, "w1", "y")  # it moved
    cache.forget_address("w0")  # the others were there (either name of the first says so)
    assert len(cache) == 1 and cache[("default", "y")].address == "w1"
    cache.forget_actor(ActorId((3).to_bytes(4, "big")))
    assert len(cache) == 0 and len(cache._at) == 0 and not cache._keys_of


def test_the_name_cache_keeps_a_looked_up_actor_small_and_gives_it_back_whole() -> None:
    cache = NameCache()
    for i in range(10):
        cache.cache(("default", f"n{i}"), _info(i, f"w{i % 2}", f"n{i}"))
    cache.cache(("other", "n0"), _info(20, "w0", "n0", "other"))
    # One shared kind per address and namespace, no ActorInfo (nor name) per cached name...
    held = cache.held("default", "n3")
    assert isinstance(held, CachedName) and len(cache._kinds) == 3
    assert held.of is cast(CachedName, cache.held("default", "n1")).of
    assert (held.actor_id, held.address, held.kind) == (
        ActorId((3).to_bytes(4, "big")),
        "w1",
        "coroutine",
    )
    # ...yet read back as the ActorInfo the lookup found, in its namespace.
    assert cache[("default", "n3")] == _info(3, "w1", "n3")
    assert cache.get(("other", "n0")) == _info(20, "w0", "n0", "other")
    assert cache.info_of(ActorId((4).to_bytes(4, "big"))) == _info(4, "w0", "n4")
    cache.forget_address("w0")
    assert len(cache) == 5 and len(cache._kinds) == 1
    cache.cache(("default", "n3"), _info(3, "w2", "n3"))  # it moved
    assert cache[("default", "n3")].address == "w2" and len(cache) == 5
