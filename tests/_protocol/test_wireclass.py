"""``@message`` classes behave as ``attrs.frozen`` ones do, for everything the runtime uses."""

from __future__ import annotations

import copy
import pickle
import weakref
from typing import Any

import attrs
import cattrs
import pytest

from actorgrid._protocol.messages import MESSAGE_TYPES, ActorInfo, Hello, Pulse
from actorgrid._protocol.wireclass import message


@message
class Point:
    """A record with a method."""

    x: int
    label: str = "p"
    tags: tuple[str, ...] = ()

    @property
    def doubled(self) -> int:
        return self.x * 2


@attrs.frozen
class AttrsPoint:
    x: int
    label: str = "p"
    tags: tuple[str, ...] = ()


def test_construction_defaults_repr_and_methods_match_attrs() -> None:
    p = Point(3, tags=("a",))
    assert (p.x, p.label, p.tags, p.doubled) == (3, "p", ("a",), 6)
    assert repr(p) == repr(AttrsPoint(3, tags=("a",))).replace("AttrsPoint", "Point")
    assert Point.__doc__ == "A record with a method."
    with pytest.raises(TypeError):
        Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Point(1, "a", (), "extra")  # type: ignore[call-arg]


def test_equality_and_hash_follow_fields_and_class() -> None:
    assert Point(1) == Point(1, "p", ())
    assert Point(1) != Point(2)
    assert Point(1) != AttrsPoint(1)  # another class is never equal, as in attrs
    assert hash(Point(1, "q")) == hash(Point(1, "q"))
    assert len({Point(1), Point(1), Point(2)}) == 2
    assert Pulse() == Pulse() and hash(Pulse()) == hash(Pulse())


def test_instances_are_frozen_slotted_and_weakly_referable() -> None:
    p = Point(1)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        p.x = 2  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        del p.x  # type: ignore[misc]
    assert not hasattr(p, "__dict__")
    assert weakref.ref(p)() is p


def test_attrs_api_and_pickle_and_match() -> None:
    p = Point(1, "a", ("t",))
    assert attrs.has(Point)
    assert [f.name for f in attrs.fields(Point)] == ["x", "label", "tags"]
    assert attrs.fields(Point).label.default == "p"
    assert attrs.fields(Point).x.default is attrs.NOTHING
    assert attrs.evolve(p, label="b") == Point(1, "b", ("t",))
    assert attrs.asdict(p) == {"x": 1, "label": "a", "tags": ("t",)}
    assert attrs.astuple(p) == (1, "a", ("t",))
    assert pickle.loads(pickle.dumps(p)) == p
    assert copy.deepcopy(p) == p
    match p:
        case Point(x, label):
            assert (x, label) == (1, "a")
        case _:
            pytest.fail("a positional match pattern did not match")


def test_cattrs_round_trip() -> None:
    converter = cattrs.Converter()
    p = Point(4, "c", ("x", "y"))
    assert converter.structure(converter.unstructure(p), Point) == p


def test_every_wire_message_is_a_record_attrs_understands() -> None:
    # The codec and evolve() read __attrs_attrs__; a class left out of @message keeps attrs.
    for cls in MESSAGE_TYPES:
        assert attrs.has(cls), cls
        assert [f.name for f in attrs.fields(cls)] == list(cls.__match_args__), cls
    info = ActorInfo(b"a" * 16, "h:1", "class", "C")  # type: ignore[arg-type]
    assert attrs.evolve(info, address="h:2").address == "h:2"
    assert Hello("driver", "", 1) == Hello("driver", "", 1, 0)


def test_unsupported_declarations_are_refused_with_the_reason() -> None:
    with pytest.raises(TypeError, match="plain defaults"):

        @message
        class WithField:
            x: int = attrs.field(default=1)

    with pytest.raises(TypeError, match="follows one"):
        namespace: dict[str, Any] = {"__annotations__": {"a": int, "b": int}, "a": 1}
        message(type("Bad", (), namespace))

    with pytest.raises(TypeError, match="do not inherit"):

        @message
        class Child(Point):
            y: int = 0


def test_a_plain_subclass_builds_and_uses_its_record_class_init() -> None:
    @message
    class Base:
        a: int
        b: int = 2

    class Sub(Base):
        def __init__(self, a: int) -> None:
            super().__init__(a, b=a + 1)

    assert (Sub(1).a, Sub(1).b) == (1, 2)
    assert Base(5) == Base(5, 2)
