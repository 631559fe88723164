"""Packing folders into content-hashed packages, and checking runtime_env dicts: no
processes, only files in a temporary folder."""

from __future__ import annotations

import zipfile
from io import BytesIO
from pathlib import Path

import pytest

import actorgrid as ag
from actorgrid._env.packing import is_excluded, pack_folder, unpack
from actorgrid._env.spec import prepare


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _names(data: bytes) -> list[str]:
    with zipfile.ZipFile(BytesIO(data)) as archive:
        return sorted(archive.namelist())


@pytest.mark.parametrize(
    ("path", "is_dir", "patterns", "excluded"),
    [
        ("run.log", False, ("*.log",), True),
        ("deep/in/run.log", False, ("*.log",), True),
        ("data", True, ("data/",), True),
        ("data", False, ("data/",), False),  # "data/" names folders only
        ("build", True, ("/build",), True),
        ("src/build", True, ("/build",), False),  # "/build" only at the top
        ("logs/a.txt", False, ("logs/*.txt",), True),
        ("src/logs/a.txt", False, ("logs/*.txt",), False),
        ("main.py", False, ("*.log", "# a comment", ""), False),
    ],
)
def test_excludes_follow_gitignore_rules(
    path: str, is_dir: bool, patterns: tuple[str, ...], excluded: bool
) -> None:
    assert is_excluded(path, is_dir, patterns) is excluded


def test_same_content_same_digest_and_bytes_and_excludes_left_out(tmp_path: Path) -> None:
    files = {"main.py": "print(1)\n", "pkg/util.py": "X = 2\n", "out/run.log": "noise"}
    a = pack_folder(_tree(tmp_path / "a", files), ("*.log",))
    b = pack_folder(_tree(tmp_path / "b", files), ("*.log",))
    assert a.digest == b.digest and a.data == b.data
    assert _names(a.data) == ["main.py", "pkg/util.py"]
    (tmp_path / "b" / "main.py").write_text("print(2)\n")
    assert pack_folder(tmp_path / "b", ("*.log",)).digest != a.digest


def test_clutter_is_never_shipped(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {"m.py": "", "__pycache__/m.cpython-311.pyc": "", ".git/HEAD": "", "x.pyc": ""},
    )
    assert _names(pack_folder(root).data) == ["m.py"]


def test_a_folder_over_the_cap_is_refused_with_the_fix(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"small.py": "x = 1\n", "big.bin": "x" * 5000})
    with pytest.raises(ag.RuntimeEnvError) as info:
        pack_folder(root, max_bytes=1000)
    message = str(info.value)
    assert str(root) in message and "cap" in message and "excludes" in message
    assert "ACTORGRID_MAX_PACKAGE_BYTES" in message
    assert pack_folder(root, ("*.bin",), max_bytes=1000).size == len("x = 1\n")


def test_unpack_once_into_the_cache(tmp_path: Path) -> None:
    package = pack_folder(_tree(tmp_path / "src", {"a/b.txt": "hello"}))
    cache = tmp_path / "cache"
    folder = unpack(package.data, package.digest, cache)
    assert (folder / "a" / "b.txt").read_text() == "hello"
    assert unpack(b"not a zip: not read again", package.digest, cache) == folder
    assert [p.name for p in cache.iterdir()] == [package.digest]  # no partial copy left


def test_py_modules_ship_under_their_package_name(tmp_path: Path) -> None:
    _tree(tmp_path, {"mypkg/__init__.py": "", "mypkg/core.py": "", "single.py": ""})
    prepared = prepare({"py_modules": [str(tmp_path / "mypkg"), str(tmp_path / "single.py")]})
    names = [_names(prepared.packages[d].data) for d in prepared.spec.py_modules]
    assert names == [["mypkg/__init__.py", "mypkg/core.py"], ["single.py"]]


def test_equal_environments_share_a_key_and_different_ones_do_not(tmp_path: Path) -> None:
    _tree(tmp_path, {"m.py": ""})
    one = prepare({"working_dir": str(tmp_path), "env_vars": {"A": "1"}})
    same = prepare({"env_vars": {"A": "1"}, "working_dir": str(tmp_path)})
    other = prepare({"working_dir": str(tmp_path), "env_vars": {"A": "2"}})
    assert one.spec.key == same.spec.key != other.spec.key


@pytest.mark.parametrize(
    ("runtime_env", "says"),
    [
        ({"workdir": "."}, "unknown key(s) 'workdir'"),
        ({"env_vars": {"N": 1}}, "strings to strings"),
        ({"working_dir": "/no/such/folder"}, "is not a folder"),
        ({"worker_setup": "not callable"}, "must be a callable"),
        ({"excludes": "*.log"}, "list of patterns"),
    ],
)
def test_bad_runtime_envs_say_what_is_wrong(runtime_env: dict[str, object], says: str) -> None:
    with pytest.raises(ag.RuntimeEnvError, match="runtime_env") as info:
        prepare(runtime_env)
    assert says in str(info.value)


def test_a_package_whose_content_does_not_match_its_digest_is_not_used(tmp_path: Path) -> None:
    good = pack_folder(_tree(tmp_path / "a", {"m.py": "X = 1\n"}))
    other = pack_folder(_tree(tmp_path / "b", {"m.py": "X = 2\n"}))
    with pytest.raises(ag.RuntimeEnvError, match="damaged or replaced"):
        unpack(other.data, good.digest, tmp_path / "cache")
    assert not (tmp_path / "cache" / good.digest).exists()
    assert not list((tmp_path / "cache").iterdir())  # no partial copy either
