"""One front door: ``actorgrid/__init__.py`` exports every public name exactly once.

Public classes, functions and exceptions live in private modules but present themselves as
``actorgrid.<Name>`` (``__module__ == "actorgrid"``), so reprs, tracebacks, pickles and docs
show the name users import.
"""

from __future__ import annotations

import collections
import importlib.metadata
import inspect
import types

import actorgrid

# Public submodules: attributes of the package that are not in __all__ but are not stray
# imports either.
PUBLIC_SUBMODULES = frozenset({"testing", "cli"})


def _all() -> list[str]:
    names = getattr(actorgrid, "__all__", None)
    assert isinstance(names, (list, tuple)), "actorgrid.__all__ must be a list of names"
    assert all(isinstance(n, str) for n in names), names
    return list(names)


def test_all_names_exist() -> None:
    missing = [name for name in _all() if not hasattr(actorgrid, name)]
    assert not missing, f"in actorgrid.__all__ but not attributes of actorgrid: {missing}"


def test_all_names_are_listed_once() -> None:
    repeated = sorted(name for name, n in collections.Counter(_all()).items() if n > 1)
    assert not repeated, f"listed more than once in actorgrid.__all__: {repeated}"


def test_exported_objects_belong_to_actorgrid() -> None:
    wrong = {}
    for name in _all():
        obj = getattr(actorgrid, name, None)
        is_code = inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj)
        if is_code and obj.__module__ != "actorgrid":
            wrong[name] = obj.__module__
    assert not wrong, (
        "these exports must set __module__ = 'actorgrid' (e.g. in actorgrid/__init__.py, "
        f"after importing them); name -> current __module__: {wrong}"
    )


def test_no_public_attribute_is_left_out_of_all() -> None:
    exported = set(_all())
    stray = {}
    for name, value in vars(actorgrid).items():
        if name.startswith("_") or name in exported:
            continue
        if name in PUBLIC_SUBMODULES and isinstance(value, types.ModuleType):
            continue
        stray[name] = type(value).__name__
    assert not stray, (
        "public attributes of actorgrid missing from __all__ (export them, or import them "
        f"under a private name): {stray}"
    )


def test_version_matches_distribution_metadata() -> None:
    version = getattr(actorgrid, "__version__", None)
    assert version == importlib.metadata.version("actorgrid"), (
        f"actorgrid.__version__ is {version!r}; the installed distribution says "
        f"{importlib.metadata.version('actorgrid')!r} (reinstall with `pip install -e .`, "
        "or read the version from importlib.metadata)"
    )
