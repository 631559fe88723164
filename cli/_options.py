"""Options of the long-running commands, from the command line and from TOML files.

``actorgrid start --head`` and ``actorgrid node`` take their options from three places, each
overriding the one before: the defaults, a ``--config`` file, the command line. The same
table of :class:`Option` declares the argparse flag, checks a value from either source, and
writes ``--save-config`` files. ``actorgrid up --config`` reads a cluster file whose
``[head]`` table takes the options of ``start --head``.

Every check raises :class:`OptionError` with a message that names the option and the fix.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import math
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import actorgrid as ag

__all__ = [
    "DEFAULT_NODE_COMMAND",
    "NODE_OPTIONS",
    "START_OPTIONS",
    "UP_OPTIONS",
    "ClusterConfig",
    "Option",
    "OptionError",
    "add_option_flags",
    "add_options",
    "check_address",
    "load_cluster_config",
    "merge_options",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "resolve_options",
    "save_options",
    "tls_config",
]

DEFAULT_NODE_COMMAND = (
    "ssh {host} actorgrid node --address {address} --num-workers {num_workers} "
    "--max-message-bytes {max_message_bytes} --secret-stdin"
)
DEFAULT_TLS_NODE_COMMAND = (
    DEFAULT_NODE_COMMAND + " --certfile {certfile} --keyfile {keyfile} --cafile {cafile}"
)
COMMAND_FIELDS = (
    "host", "address", "num_workers", "max_message_bytes", "python", "certfile", "keyfile", "cafile"
)  # fmt: skip
TLS_KEYS = ("certfile", "keyfile", "cafile")


class OptionError(Exception):
    """An option's value, or a config file, is wrong; the message says how to fix it."""


# --- value checks: each takes a value as TOML or argparse gives it and returns it clean -----


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OptionError(f"{what} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise OptionError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _whole(value: object, what: str, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionError(f"{what} must be a whole number, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise OptionError(f"{what} must be {bound}, got {value}")
    return value


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise OptionError(f"{what} must be a non-empty string, got {value!r}")
    return value


def check_address(value: object, what: str = "address") -> str:
    text = _text(value, what)
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise OptionError(
            f"{what} must be the head's host:port, as `actorgrid start --head` prints it "
            f"(e.g. 10.0.0.1:6380), got {text!r}"
        )
    return text


def _check_dashboard(value: object, what: str = "dashboard") -> str:
    text = _text(value, what)
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise OptionError(
            f"{what} must be HOST:PORT for the dashboard to listen on, e.g. 127.0.0.1:8265 "
            f"(port 0: any free port), got {text!r}"
        )
    return text


def _check_resources(value: object, what: str = "resources") -> dict[str, float]:
    teach = f'{what} must map resource names to amounts, e.g. {{"GPU": 2}}'
    if not isinstance(value, dict):
        raise OptionError(f"{teach}; got {value!r}")
    clean: dict[str, float] = {}
    for name, amount in value.items():
        if not isinstance(name, str) or not name:
            raise OptionError(f"{teach}; {name!r} is not a resource name")
        number = _number(amount, f"{what}[{name!r}]")
        if number < 0:
            raise OptionError(f"{what}[{name!r}] must not be negative, got {amount!r}")
        clean[name] = number
    return clean


def _parse_resources(text: str) -> dict[str, float]:
    try:
        value = json.loads(text)
    except ValueError:
        raise OptionError(
            f"expected a JSON object, e.g. '{{\"GPU\": 2}}' (quoted for the shell), got {text!r}"
        ) from None
    return _check_resources(value, "the value")


def _check_labels(value: object, what: str = "labels") -> dict[str, str]:
    teach = f"{what} must be name=value pairs, e.g. zone=a,rack=3"
    if isinstance(value, str):
        return _parse_labels(value)
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str | int | float) for k, v in value.items()
    ):
        raise OptionError(f"{teach}; got {value!r}")
    return {k: str(v) for k, v in value.items()}


def _parse_labels(text: str) -> dict[str, str]:
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


def _argparse_type(check: Callable[[object, str], Any], parse: Callable[[str], object]) -> Any:
    def convert(text: str) -> Any:
        try:
            return check(parse(text), "the value")
        except (OptionError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def _int_or_text(text: str) -> object:
    try:
        return int(text)
    except ValueError:
        return text


def _float_or_text(text: str) -> object:
    try:
        return float(text)
    except ValueError:
        return text


def positive_int(text: str) -> int:
    """argparse type: a whole number, at least 1."""
    result: int = _argparse_type(lambda v, w: _whole(v, w, 1), _int_or_text)(text)
    return result


def non_negative_int(text: str) -> int:
    """argparse type: a whole number, at least 0."""
    result: int = _argparse_type(lambda v, w: _whole(v, w, 0), _int_or_text)(text)
    return result


_BYTE_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
}  # fmt: skip
# Below this, even the handshake and control messages would not fit.
MIN_MESSAGE_BYTES = 4096


def _check_bytes(value: object, what: str) -> int:
    """A size in bytes: a whole number, or a string such as "64MiB" or "1 GB"."""
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        digits = text.rstrip("kmgib")
        unit = text[len(digits) :]
        if not digits.isdigit() or unit not in _BYTE_UNITS:
            raise OptionError(
                f"{what} must be a size in bytes, e.g. 1048576 or 64MiB (units: KB, MB, GB, "
                f"KiB, MiB, GiB), got {value!r}"
            )
        value = int(digits) * _BYTE_UNITS[unit]
    return _whole(value, what, MIN_MESSAGE_BYTES)


def _check_positive(value: object, what: str) -> float:
    number = _number(value, what)
    if number <= 0:
        raise OptionError(f"{what} must be more than 0, got {value!r}")
    return number


def _check_non_negative(value: object, what: str) -> float:
    number = _number(value, what)
    if number < 0:
        raise OptionError(f"{what} must not be negative, got {value!r}")
    return number


def positive_float(text: str) -> float:
    """argparse type: a finite number above 0."""
    result: float = _argparse_type(_check_positive, _float_or_text)(text)
    return result


# --- the option tables ----------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One option of a long-running command: its TOML key is its flag without ``--``, with
    ``_`` for ``-``; ``default`` None means "not set" (the library decides)."""

    key: str
    check: Callable[[object, str], Any]
    parse: Callable[[str], object]
    metavar: str
    help: str
    default: Any = None
    is_path: bool = False  # a relative path in a config file is relative to that file

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")


def _library_default(function: Callable[..., Any], name: str) -> Any:
    """A keyword's default in the public API, so that the CLI never drifts from it."""
    return inspect.signature(function).parameters[name].default


_PULSE = Option(
    "pulse_interval",
    _check_positive,
    _float_or_text,
    "S",
    "seconds between liveness pulses; a peer silent for 5 pulses is dead (default %(default)s)",
    _library_default(ag.serve_head, "pulse_interval"),
)
_GRACE = Option(
    "grace",
    _check_non_negative,
    _float_or_text,
    "S",
    "seconds stopped workers get to clean up before they are killed (default %(default)s)",
    _library_default(ag.serve_head, "grace_s"),
)
_MAX_MESSAGE_BYTES = Option(
    "max_message_bytes",
    _check_bytes,
    _int_or_text,
    "BYTES",
    "the largest message this member accepts, e.g. 64MiB: bigger ones are refused, and "
    "drivers adopt the head's, so they refuse such data before sending it (default "
    "%(default)s)",
    _library_default(ag.serve_head, "max_message_bytes"),
)
_TLS = tuple(
    Option(key, _text, str, "FILE", what + " (with --tls; the same on every member)", is_path=True)
    for key, what in (
        ("certfile", "this member's TLS certificate, signed by the cluster's CA"),
        ("keyfile", "the private key of --certfile (may be the same file)"),
        ("cafile", "the cluster's CA certificate: the only one trusted"),
    )
)

_SECRET_FILE = Option(
    "secret_file",
    _text,
    str,
    "FILE",
    "file holding the cluster secret in hex",
    is_path=True,
)

_RESOURCES = Option(
    "resources",
    lambda v, w: _check_resources(v, w),
    lambda text: _parse_resources(text),
    "JSON",
    'resources this machine\'s node offers, as a JSON object, e.g. \'{"GPU": 2, "camera": 1}\': '
    "custom ones, and GPU/memory/CPU to override what it detects",
)
_LABELS = Option(
    "labels",
    lambda v, w: _check_labels(v, w),
    lambda text: _parse_labels(text),
    "K=V,...",
    "labels of this machine's node, for .options(label_selector=...), e.g. zone=a,rack=3 "
    "(added to the automatic hostname, platform, python_version, num_cpus, memory_gb, "
    "num_gpus)",
)


START_OPTIONS: tuple[Option, ...] = (
    Option(
        "host",
        _text,
        str,
        "HOST",
        "address to listen on: for other machines to join, this machine's address on their "
        "network, e.g. 10.0.0.1 (default %(default)s: this machine only)",
        _library_default(ag.serve_head, "host"),
    ),
    Option(
        "port",
        lambda v, w: _whole(v, w, 0, 65535),
        _int_or_text,
        "PORT",
        "port to listen on (default %(default)s: any free port)",
        _library_default(ag.serve_head, "port"),
    ),
    Option(
        "num_workers",
        lambda v, w: _whole(v, w, 0),
        _int_or_text,
        "N",
        "worker processes on this machine, run by a node agent inside the head process "
        "(default %(default)s)",
        _library_default(ag.serve_head, "num_workers"),
    ),
    Option(
        "secret_file",
        _text,
        str,
        "FILE",
        "file holding the cluster secret in hex (default: generate a random secret and write "
        "it to a new file, readable only by you, next to the cluster file)",
        is_path=True,
    ),
    _RESOURCES,
    _LABELS,
    Option(
        "dashboard",
        _check_dashboard,
        str,
        "HOST:PORT",
        "where the head serves its live dashboard and /metrics (default %(default)s: this "
        "machine only, any free port); every request needs the token it prints",
        "127.0.0.1:0",
    ),
    _PULSE,
    _GRACE,
    _MAX_MESSAGE_BYTES,
    *_TLS,
)

# `actorgrid up` starts one worker per CPU unless told otherwise, so that the cluster it
# reports ready can run work at once; `start --head` keeps the library's default.
UP_OPTIONS: tuple[Option, ...] = tuple(
    dataclasses.replace(
        option,
        default=None,
        help="worker processes on this machine, run inside the head process (default: one "
        f"per CPU, {os.cpu_count() or 1} here; 0 for a head-only machine)",
    )
    if option.key == "num_workers"
    else option
    for option in START_OPTIONS
)

NODE_OPTIONS: tuple[Option, ...] = (
    Option("address", check_address, str, "HOST:PORT", "the head's address, as it printed it"),
    _SECRET_FILE,
    Option(
        "num_workers",
        lambda v, w: _whole(v, w, 1),
        _int_or_text,
        "N",
        "worker processes to start (default: one per CPU)",
    ),
    Option(
        "num_cpus_per_worker",
        _check_positive,
        _float_or_text,
        "C",
        "CPUs each worker offers the scheduler (default %(default)s)",
        _library_default(ag.serve_node, "num_cpus_per_worker"),
    ),
    _RESOURCES,
    _LABELS,
    _PULSE,
    _GRACE,
    _MAX_MESSAGE_BYTES,
    *_TLS,
)


def tls_config(options: Mapping[str, Any], args: argparse.Namespace) -> ag.TLSConfig | None:
    """The mutual TLS settings in effect: on with --tls or any of the three files, and then
    all three are required."""
    files: list[str | None] = [options.get(key) for key in TLS_KEYS]
    if not getattr(args, "tls", False) and not any(files):
        return None
    missing = [f"--{key}" for key, path in zip(TLS_KEYS, files, strict=True) if not path]
    if missing:
        raise OptionError(
            f"TLS needs {', '.join(missing)} too: every member presents a certificate "
            "signed by the cluster's CA and trusts only that CA"
        )
    certfile, keyfile, cafile = (str(path) for path in files)
    try:
        return ag.TLSConfig(certfile=certfile, keyfile=keyfile, cafile=cafile)
    except (OSError, ValueError) as exc:
        raise OptionError(str(exc)) from None


def add_options(parser: argparse.ArgumentParser, options: Iterable[Option]) -> None:
    """Declare each option, plus ``--config`` and ``--save-config``."""
    add_option_flags(parser, options)
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="read options from this TOML file (as --save-config writes it); flags override it",
    )
    parser.add_argument(
        "--save-config",
        metavar="FILE",
        help="write the options in effect to this TOML file and exit without starting",
    )


def add_option_flags(parser: argparse.ArgumentParser, options: Iterable[Option]) -> None:
    """Declare each option. One not given on the command line is absent from the namespace,
    so that a config file can supply it."""
    options = tuple(options)
    if any(option.key == "certfile" for option in options):
        parser.add_argument(
            "--tls",
            action="store_true",
            help="mutual TLS on every link (needs --certfile, --keyfile, --cafile)",
        )
    for option in options:
        shown = "" if option.default is None else option.default
        parser.add_argument(
            option.flag,
            dest=option.key,
            type=_argparse_type(option.check, option.parse),
            default=argparse.SUPPRESS,
            metavar=option.metavar,
            help=option.help.replace("%(default)s", str(shown)),
        )


def resolve_options(options: Iterable[Option], args: argparse.Namespace) -> dict[str, Any]:
    """The options in effect: defaults, then ``--config``'s file, then the command line."""
    options = tuple(options)
    config: str | None = args.config
    from_file = _load_table(Path(config), options) if config is not None else {}
    return merge_options(options, from_file, args)


def merge_options(
    options: Iterable[Option], from_file: Mapping[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """The defaults, overridden by ``from_file``, overridden by the command line."""
    options = tuple(options)
    effective = {option.key: option.default for option in options}
    effective.update(from_file)
    effective.update({o.key: getattr(args, o.key) for o in options if hasattr(args, o.key)})
    return effective


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise OptionError(f"cannot read the config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise OptionError(f"the config file {path} is not valid TOML: {exc}") from None


def _load_table(path: Path, options: tuple[Option, ...]) -> dict[str, Any]:
    return _check_table(_read_toml(path), options, path, "")


def _check_table(
    table: Mapping[str, Any], options: tuple[Option, ...], path: Path, section: str
) -> dict[str, Any]:
    where = f"{path} [{section}]" if section else str(path)
    by_key = {option.key: option for option in options}
    unknown = sorted(set(table) - set(by_key))
    if unknown:
        raise OptionError(
            f"{where}: unknown option{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}; the known ones are {', '.join(by_key)}"
        )
    clean: dict[str, Any] = {}
    for key, value in table.items():
        option = by_key[key]
        clean[key] = option.check(value, f"{where}: {key}")
        if option.is_path:
            clean[key] = str(path.parent / Path(clean[key]).expanduser())
    return clean


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # A JSON string (without \u escapes of non-ASCII) is a valid TOML basic string.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        items = ", ".join(f"{_toml_value(str(k))} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    raise TypeError(f"cannot write {value!r} as TOML")


def save_options(path: Path, command: str, values: Mapping[str, Any]) -> None:
    """Write ``values`` (flat keys; None means unset and is left out) as a TOML file."""
    lines = [f"# Options of `{command}`; use them with `{command} --config {path.name}`."]
    for key, value in values.items():
        if value is None:
            continue
        if key == "secret_file":  # relative to the file itself when read back
            value = os.path.abspath(os.path.expanduser(value))
        lines.append(f"{key} = {_toml_value(value)}")
    text = "\n".join(lines) + "\n"
    try:
        path.write_text(text)
    except OSError as exc:
        raise OptionError(f"cannot write the config file {path}: {exc.strerror or exc}") from None


# --- `actorgrid up --config cluster.toml` ---------------------------------------------------


@dataclass(frozen=True)
class ClusterConfig:
    """A cluster.toml: the head's options and the hosts to start nodes on."""

    head: dict[str, Any]
    hosts: tuple[str, ...]
    num_workers: int
    command: str


_NODES_KEYS = ("hosts", "num_workers", "command")


def load_cluster_config(path: Path) -> ClusterConfig:
    data = _read_toml(path)
    unknown = sorted(set(data) - {"head", "nodes"})
    if unknown:
        raise OptionError(
            f"{path}: unknown table{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}; a cluster config has [head] and [nodes]"
        )
    head_table = data.get("head", {})
    nodes_table = data.get("nodes", {})
    for name, table in (("head", head_table), ("nodes", nodes_table)):
        if not isinstance(table, dict):
            raise OptionError(f"{path}: {name} must be a table ([{name}]), got {table!r}")
    head = _check_table(head_table, START_OPTIONS, path, "head")
    unknown = sorted(set(nodes_table) - set(_NODES_KEYS))
    if unknown:
        raise OptionError(
            f"{path} [nodes]: unknown option{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}; the known ones are {', '.join(_NODES_KEYS)}"
        )
    hosts = nodes_table.get("hosts", [])
    if not isinstance(hosts, list) or not all(isinstance(h, str) and h for h in hosts):
        raise OptionError(
            f'{path} [nodes]: hosts must be a list of host names, e.g. ["10.0.0.2"], got {hosts!r}'
        )
    num_workers = _whole(nodes_table.get("num_workers", 1), f"{path} [nodes]: num_workers", 1)
    tls = any(head.get(key) for key in TLS_KEYS)
    default = DEFAULT_TLS_NODE_COMMAND if tls else DEFAULT_NODE_COMMAND
    command = _text(nodes_table.get("command", default), f"{path} [nodes]: command")
    return ClusterConfig(head, tuple(hosts), num_workers, command)
