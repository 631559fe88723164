"""Folders to packages and back: zip files named by the sha256 of what they hold.

- ``pack_folder(path, excludes, prefix)``: every file under ``path`` (sorted, so the same
  content always gives the same digest and the same bytes), minus ``.gitignore``-style
  ``excludes`` and the usual clutter (``__pycache__``, ``.git``, ``*.pyc``), under ``prefix``
  inside the zip. Raises :class:`RuntimeEnvError` past ``max_bytes`` of file content, saying
  which folder, how big it is and how to make it smaller.
- ``unpack(data, digest, cache)``: extract into ``cache/digest`` once (a half-written copy
  is never seen: it is extracted beside it, then renamed), and return that folder.

Costs: packing reads every file once; unpacking happens once per node per package.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

from .._exceptions import RuntimeEnvError

__all__ = [
    "DEFAULT_EXCLUDES",
    "DEFAULT_MAX_PACKAGE_BYTES",
    "Package",
    "is_excluded",
    "max_package_bytes",
    "pack_file",
    "pack_folder",
    "unpack",
]

# The largest folder (sum of file sizes) shipped as one package, unless
# ACTORGRID_MAX_PACKAGE_BYTES says otherwise.
DEFAULT_MAX_PACKAGE_BYTES = 256 * 1024 * 1024
DEFAULT_EXCLUDES = ("__pycache__/", ".git/", "*.pyc", ".venv/")
# Every entry gets this time stamp, so a zip's bytes depend only on the content.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


class Package:
    """A zipped folder and the digest of its content."""

    __slots__ = ("data", "digest", "size", "source")

    def __init__(self, digest: str, data: bytes, size: int, source: str) -> None:
        self.digest = digest
        self.data = data
        self.size = size  # bytes of file content before compression
        self.source = source  # the folder or file it was made from, for messages

    def __repr__(self) -> str:
        return f"<Package {self.digest[:12]} {self.source} {len(self.data)} bytes>"


def max_package_bytes() -> int:
    raw = os.environ.get("ACTORGRID_MAX_PACKAGE_BYTES")
    if not raw:
        return DEFAULT_MAX_PACKAGE_BYTES
    try:
        return int(raw)
    except ValueError:
        raise RuntimeEnvError(
            f"ACTORGRID_MAX_PACKAGE_BYTES={raw!r} is not a number of bytes; set it to an "
            "integer such as 536870912 (512 MiB), or unset it for the default"
        ) from None


def is_excluded(relative: str, is_dir: bool, patterns: tuple[str, ...]) -> bool:
    """Whether ``relative`` (a "/"-separated path under the packed folder) matches one of
    ``.gitignore``-style ``patterns``: ``*.log`` matches that name at any depth, ``/build``
    only at the top, ``data/`` only folders, ``logs/*.txt`` a path from the top."""
    name = relative.rsplit("/", 1)[-1]
    for raw in patterns:
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        dir_only = pattern.endswith("/")
        pattern = pattern.rstrip("/")
        if dir_only and not is_dir:
            continue
        anchored = pattern.startswith("/") or "/" in pattern
        pattern = pattern.lstrip("/")
        if anchored:
            if fnmatch.fnmatchcase(relative, pattern):
                return True
        elif fnmatch.fnmatchcase(name, pattern):
            return True
    return False


def pack_folder(
    path: str | os.PathLike[str],
    excludes: tuple[str, ...] = (),
    *,
    prefix: str = "",
    max_bytes: int | None = None,
    what: str = "working_dir",
) -> Package:
    """Zip the folder ``path`` (its files under ``prefix/`` in the zip, or at the top)."""
    root = Path(path).resolve()
    if not root.is_dir():
        raise RuntimeEnvError(
            f"runtime_env {what} {str(path)!r} is not a folder: give the path of a local "
            "folder (relative paths are from the current directory)"
        )
    limit = max_package_bytes() if max_bytes is None else max_bytes
    patterns = DEFAULT_EXCLUDES + tuple(excludes)
    files: list[tuple[str, Path]] = []
    for folder, dirs, names in os.walk(root):
        base = Path(folder).relative_to(root).as_posix()
        base = "" if base == "." else base + "/"
        dirs[:] = sorted(d for d in dirs if not is_excluded(base + d, True, patterns))
        files.extend(
            (base + n, Path(folder) / n)
            for n in sorted(names)
            if not is_excluded(base + n, False, patterns)
        )
    return _zip(sorted(files), prefix, limit, what, str(path))


def pack_file(path: str | os.PathLike[str], *, max_bytes: int | None = None) -> Package:
    """Zip one module file (a ``py_modules`` entry that is a single ``.py``)."""
    file = Path(path).resolve()
    limit = max_package_bytes() if max_bytes is None else max_bytes
    return _zip([(file.name, file)], "", limit, "py_modules", str(path))


def _zip(files: list[tuple[str, Path]], prefix: str, limit: int, what: str, source: str) -> Package:
    digest = hashlib.sha256()
    buffer = io.BytesIO()
    total = 0
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for relative, file in files:
            if not file.is_file():
                continue  # a dangling link, a socket: nothing to ship
            total += file.stat().st_size
            if total > limit:
                raise RuntimeEnvError(
                    f"runtime_env {what} {source!r} holds more than {_mib(limit)} of files "
                    f"(the package size cap), so it was not shipped. Leave out what the "
                    'workers do not need with runtime_env={..., "excludes": ["*.log", '
                    '"data/"]}, or raise the cap with ACTORGRID_MAX_PACKAGE_BYTES'
                )
            name = f"{prefix}/{relative}" if prefix else relative
            content = file.read_bytes()
            _hash_entry(digest, name, content)
            entry = zipfile.ZipInfo(name, _ZIP_TIME)
            entry.external_attr = (file.stat().st_mode & 0o777) << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, content)
    return Package(digest.hexdigest(), buffer.getvalue(), total, source)


def _hash_entry(digest: Any, name: str, content: bytes) -> None:
    digest.update(name.encode() + b"\0" + len(content).to_bytes(8, "big"))
    digest.update(content)


def unpack(data: bytes, digest: str, cache: Path, *, check: bool = True) -> Path:
    """The folder ``cache/digest`` holding the package's files, extracted if not yet there.
    With ``check``, its content must match ``digest`` (RuntimeEnvError otherwise), so a
    cache entry always holds what its name says."""
    target = cache / digest
    if target.is_dir():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    partial = cache / f".{digest}.{os.getpid()}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            if check:
                hasher = hashlib.sha256()
                for entry in archive.infolist():
                    _hash_entry(hasher, entry.filename, archive.read(entry))
                if hasher.hexdigest() != digest:
                    raise RuntimeEnvError(
                        f"package {digest[:12]} arrived with other content (its hash is "
                        f"{hasher.hexdigest()[:12]}): it was damaged or replaced on the way; "
                        "it was not used"
                    )
            archive.extractall(partial)  # drops absolute paths and ".." parts
        os.rename(partial, target)
    except OSError:
        if not target.is_dir():
            raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.4g} MiB"
