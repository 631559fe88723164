"""``merge``: a call's runtime_env over its driver's, as Ray merges them (no processes)."""

from __future__ import annotations

from pathlib import Path

from actorgrid._env.spec import merge, prepare


def _setup() -> None:
    pass


def test_child_keys_replace_the_parents_and_env_vars_merge_name_by_name(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    for folder in (one, two):
        folder.mkdir()
        (folder / "mod.py").write_text(f"WHERE = {folder.name!r}\n")
    parent = prepare(
        {
            "working_dir": str(one),
            "env_vars": {"A": "driver", "B": "driver"},
            "worker_setup": _setup,
        }
    )
    vars_only = merge(parent, prepare({"env_vars": {"B": "call", "C": "call"}}))
    assert dict(vars_only.spec.env_vars) == {"A": "driver", "B": "call", "C": "call"}
    assert vars_only.spec.working_dir == parent.spec.working_dir  # kept: the call gave none
    assert vars_only.spec.worker_setup == parent.spec.worker_setup
    assert set(vars_only.packages) == {parent.spec.working_dir}
    # The same environment written out in full has the same key: they share workers.
    written = prepare(
        {
            "working_dir": str(one),
            "env_vars": {"A": "driver", "B": "call", "C": "call"},
            "worker_setup": _setup,
        }
    )
    assert vars_only.spec.key == written.spec.key

    moved = merge(parent, prepare({"working_dir": str(two)}))
    assert moved.spec.working_dir != parent.spec.working_dir
    assert set(moved.packages) == {moved.spec.working_dir}  # the parent's folder not shipped
    assert dict(moved.spec.env_vars) == {"A": "driver", "B": "driver"}

    no_setup = merge(parent, prepare({"worker_setup": None, "env_vars": {}}))
    assert no_setup is parent  # nothing given that differs: the driver's own environment


def test_a_call_env_without_a_parent_is_itself(tmp_path: Path) -> None:
    child = prepare({"env_vars": {"X": "1"}})
    empty = prepare({})
    assert dict(merge(empty, child).spec.env_vars) == {"X": "1"}
    assert merge(empty, child).spec.key == child.spec.key
