"""Checks of option values, as TOML or argparse gives them: each returns the value clean or
raises :class:`OptionError` with a message that names the option and the fix."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from typing import Any


class OptionError(Exception):
    """An option's value, or a config file, is wrong; the message says how to fix it."""


# --- value checks: each takes a value as TOML or argparse gives it and returns it clean -----


def as_number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OptionError(f"{what} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise OptionError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def as_whole(value: object, what: str, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionError(f"{what} must be a whole number, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise OptionError(f"{what} must be {bound}, got {value}")
    return value


def as_text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise OptionError(f"{what} must be a non-empty string, got {value!r}")
    return value


def check_address(value: object, what: str = "address") -> str:
    text = as_text(value, what)
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise OptionError(
            f"{what} must be the head's host:port, as `actorgrid start --head` prints it "
            f"(e.g. 10.0.0.1:6380), got {text!r}"
        )
    return text


def check_dashboard(value: object, what: str = "dashboard") -> str:
    text = as_text(value, what)
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise OptionError(
            f"{what} must be HOST:PORT for the dashboard to listen on, e.g. 127.0.0.1:8265 "
            f"(port 0: any free port), got {text!r}"
        )
    return text


def check_resources(value: object, what: str = "resources") -> dict[str, float]:
    teach = f'{what} must map resource names to amounts, e.g. {{"GPU": 2}}'
    if not isinstance(value, dict):
        raise OptionError(f"{teach}; got {value!r}")
    clean: dict[str, float] = {}
    for name, amount in value.items():
        if not isinstance(name, str) or not name:
            raise OptionError(f"{teach}; {name!r} is not a resource name")
        number = as_number(amount, f"{what}[{name!r}]")
        if number < 0:
            raise OptionError(f"{what}[{name!r}] must not be negative, got {amount!r}")
        clean[name] = number
    return clean


def parse_resources(text: str) -> dict[str, float]:
    try:
        value = json.loads(text)
    except ValueError:
        raise OptionError(
            f"expected a JSON object, e.g. '{{\"GPU\": 2}}' (quoted for the shell), got {text!r}"
        ) from None
    return check_resources(value, "the value")


def check_labels(value: object, what: str = "labels") -> dict[str, str]:
    teach = f"{what} must be name=value pairs, e.g. zone=a,rack=3"
    if isinstance(value, str):
        return parse_labels(value)
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str | int | float) for k, v in value.items()
    ):
        raise OptionError(f"{teach}; got {value!r}")
    return {k: str(v) for k, v in value.items()}


def parse_labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, eq, value = part.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise OptionError(
                f"labels are name=value pairs separated by commas, e.g. zone=a,rack=3; got {part!r}"
            )
        labels[key.strip()] = value.strip()
    return labels


def argparse_type(check: Callable[[object, str], Any], parse: Callable[[str], object]) -> Any:
    def convert(text: str) -> Any:
        try:
            return check(parse(text), "the value")
        except (OptionError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def int_or_text(text: str) -> object:
    try:
        return int(text)
    except ValueError:
        return text


def float_or_text(text: str) -> object:
    try:
        return float(text)
    except ValueError:
        return text


def positive_int(text: str) -> int:
    """argparse type: a whole number, at least 1."""
    result: int = argparse_type(lambda v, w: as_whole(v, w, 1), int_or_text)(text)
    return result


def non_negative_int(text: str) -> int:
    """argparse type: a whole number, at least 0."""
    result: int = argparse_type(lambda v, w: as_whole(v, w, 0), int_or_text)(text)
    return result


BYTE_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
}  # fmt: skip
# Below this, even the handshake and control messages would not fit.
MIN_MESSAGE_BYTES = 4096


def check_bytes(value: object, what: str) -> int:
    """A size in bytes: a whole number, or a string such as "64MiB" or "1 GB"."""
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        digits = text.rstrip("kmgib")
        unit = text[len(digits) :]
        if not digits.isdigit() or unit not in BYTE_UNITS:
            raise OptionError(
                f"{what} must be a size in bytes, e.g. 1048576 or 64MiB (units: KB, MB, GB, "
                f"KiB, MiB, GiB), got {value!r}"
            )
        value = int(digits) * BYTE_UNITS[unit]
    return as_whole(value, what, MIN_MESSAGE_BYTES)


def check_positive(value: object, what: str) -> float:
    number = as_number(value, what)
    if number <= 0:
        raise OptionError(f"{what} must be more than 0, got {value!r}")
    return number


def check_non_negative(value: object, what: str) -> float:
    number = as_number(value, what)
    if number < 0:
        raise OptionError(f"{what} must not be negative, got {value!r}")
    return number


def positive_float(text: str) -> float:
    """argparse type: a finite number above 0."""
    result: float = argparse_type(check_positive, float_or_text)(text)
    return result
