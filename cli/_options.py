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
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import actorgrid as ag

from ._values import (
    OptionError,
    argparse_type,
    as_text,
    as_whole,
    check_address,
    check_bytes,
    check_dashboard,
    check_labels,
    check_non_negative,
    check_positive,
    check_resources,
    float_or_text,
    int_or_text,
    non_negative_int,
    parse_labels,
    parse_resources,
    positive_float,
    positive_int,
)

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
    "listen_limits",
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
    check_positive,
    float_or_text,
    "S",
    "seconds between liveness pulses; a peer silent for 5 pulses is dead (default %(default)s)",
    _library_default(ag.serve_head, "pulse_interval"),
)
_GRACE = Option(
    "grace",
    check_non_negative,
    float_or_text,
    "S",
    "seconds stopped workers get to clean up before they are killed (default %(default)s)",
    _library_default(ag.serve_head, "grace_s"),
)
_MAX_MESSAGE_BYTES = Option(
    "max_message_bytes",
    check_bytes,
    int_or_text,
    "BYTES",
    "the largest message this member accepts, e.g. 64MiB: bigger ones are refused, and "
    "drivers adopt the head's, so they refuse such data before sending it (default "
    "%(default)s)",
    _library_default(ag.serve_head, "max_message_bytes"),
)
_LISTEN = (
    Option(
        "max_unauthenticated",
        lambda v, w: as_whole(v, w, 1),
        int_or_text,
        "N",
        "connections still in their handshake that each listener holds at once (at most an "
        "eighth of the open-file limit); one more evicts the oldest of the busiest address "
        "(default %(default)s)",
        ag.ListenLimits().max_unauthenticated,
    ),
    Option(
        "handshake_timeout",
        check_positive,
        float_or_text,
        "S",
        "seconds a new connection has to authenticate before it is closed (default %(default)s)",
        ag.ListenLimits().handshake_timeout_s,
    ),
)
_TLS = tuple(
    Option(
        key, as_text, str, "FILE", what + " (with --tls; the same on every member)", is_path=True
    )
    for key, what in (
        ("certfile", "this member's TLS certificate, signed by the cluster's CA"),
        ("keyfile", "the private key of --certfile (may be the same file)"),
        ("cafile", "the cluster's CA certificate: the only one trusted"),
    )
)

_SECRET_FILE = Option(
    "secret_file",
    as_text,
    str,
    "FILE",
    "file holding the cluster secret in hex",
    is_path=True,
)

_RESOURCES = Option(
    "resources",
    lambda v, w: check_resources(v, w),
    lambda text: parse_resources(text),
    "JSON",
    'resources this machine\'s node offers, as a JSON object, e.g. \'{"GPU": 2, "camera": 1}\': '
    "custom ones, and GPU/memory/CPU to override what it detects",
)
_LABELS = Option(
    "labels",
    lambda v, w: check_labels(v, w),
    lambda text: parse_labels(text),
    "K=V,...",
    "labels of this machine's node, for .options(label_selector=...), e.g. zone=a,rack=3 "
    "(added to the automatic hostname, platform, python_version, num_cpus, memory_gb, "
    "num_gpus)",
)

_STORE = Option(
    "object_store_memory",
    check_bytes,
    int_or_text,
    "BYTES",
    "shared memory this machine's node's object store may use, e.g. 4GiB: values of 100 KB "
    "or more stay there; when full, cached copies are evicted and the rest spill to disk "
    "(default 30%% of the machine's memory)",
)


START_OPTIONS: tuple[Option, ...] = (
    Option(
        "host",
        as_text,
        str,
        "HOST",
        "address to listen on: for other machines to join, this machine's address on their "
        "network, e.g. 10.0.0.1 (default %(default)s: this machine only)",
        _library_default(ag.serve_head, "host"),
    ),
    Option(
        "port",
        lambda v, w: as_whole(v, w, 0, 65535),
        int_or_text,
        "PORT",
        "port to listen on (default %(default)s: any free port)",
        _library_default(ag.serve_head, "port"),
    ),
    Option(
        "num_workers",
        lambda v, w: as_whole(v, w, 0),
        int_or_text,
        "N",
        "worker processes on this machine, run by a node agent inside the head process "
        "(default %(default)s)",
        _library_default(ag.serve_head, "num_workers"),
    ),
    Option(
        "secret_file",
        as_text,
        str,
        "FILE",
        "file holding the cluster secret in hex (default: generate a random secret and write "
        "it to a new file, readable only by you, next to the cluster file)",
        is_path=True,
    ),
    _RESOURCES,
    _LABELS,
    _STORE,
    Option(
        "dashboard",
        check_dashboard,
        str,
        "HOST:PORT",
        "where the head serves its live dashboard and /metrics (default %(default)s: this "
        "machine only, any free port); every request needs the token it prints",
        "127.0.0.1:0",
    ),
    _PULSE,
    _GRACE,
    _MAX_MESSAGE_BYTES,
    *_LISTEN,
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
        lambda v, w: as_whole(v, w, 1),
        int_or_text,
        "N",
        "worker processes to start (default: one per CPU)",
    ),
    Option(
        "num_cpus_per_worker",
        check_positive,
        float_or_text,
        "C",
        "CPUs each worker offers the scheduler (default %(default)s)",
        _library_default(ag.serve_node, "num_cpus_per_worker"),
    ),
    _RESOURCES,
    _LABELS,
    _STORE,
    _PULSE,
    _GRACE,
    _MAX_MESSAGE_BYTES,
    *_LISTEN,
    *_TLS,
)


def listen_limits(options: Mapping[str, Any]) -> ag.ListenLimits:
    """The listener limits in effect (``--max-unauthenticated``, ``--handshake-timeout``)."""
    return ag.ListenLimits(
        max_unauthenticated=options["max_unauthenticated"],
        handshake_timeout_s=options["handshake_timeout"],
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
            type=argparse_type(option.check, option.parse),
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
    num_workers = as_whole(nodes_table.get("num_workers", 1), f"{path} [nodes]: num_workers", 1)
    tls = any(head.get(key) for key in TLS_KEYS)
    default = DEFAULT_TLS_NODE_COMMAND if tls else DEFAULT_NODE_COMMAND
    command = as_text(nodes_table.get("command", default), f"{path} [nodes]: command")
    return ClusterConfig(head, tuple(hosts), num_workers, command)
