"""``max_message_bytes`` caps what travels inline in one message, not the values that stay in
the node object store: with the cap far below them, large values still go to tasks, come back
from them and come out of ``ag.put``; a value that has to travel inline over the cap is still
refused with the error that names the cap."""

from __future__ import annotations

import numpy as np
import pytest

import actorgrid as ag

CAP_BYTES = 64 * 1024  # below the store's 100 KB threshold, so some values are inline and over
CLUSTER_OPTIONS = {"num_workers": 1, "max_message_bytes": CAP_BYTES}
BIG = 3_000_000  # 45 times the cap

pytestmark = pytest.mark.usefixtures("cluster")


@ag.remote
def total(a: np.ndarray) -> int:
    return int(a.sum(dtype="int64"))


@ag.remote
def make(n: int) -> np.ndarray:
    return np.full(n, 2, dtype=np.uint8)


@ag.remote
def length(data: bytes) -> int:
    return len(data)


def test_stored_values_over_the_message_cap_go_to_tasks_and_back() -> None:
    arr = np.full(BIG, 3, dtype=np.uint8)
    assert ag.get(total.remote(arr), timeout=60) == 3 * BIG
    made = ag.get(make.remote(BIG), timeout=60)
    assert made.nbytes == BIG and int(made[-1]) == 2
    assert ag.get(total.remote(make.remote(BIG)), timeout=60) == 2 * BIG
    assert ag.get(length.remote(bytes(BIG)), timeout=60) == BIG


def test_put_over_the_message_cap_is_stored() -> None:
    ref = ag.put(np.arange(BIG // 8, dtype=np.int64))
    assert int(ag.get(ref)[-1]) == BIG // 8 - 1
    assert ag.get(total.remote(ref), timeout=60) == sum(range(BIG // 8))


def test_an_inline_value_over_the_cap_is_refused_with_the_cap_named() -> None:
    inline = bytes(80 * 1024)  # over the cap, under the store's threshold: it travels inline
    with pytest.raises(ValueError, match=f"max_message_bytes={CAP_BYTES}"):
        length.remote(inline)
    with pytest.raises(ValueError, match=f"max_message_bytes={CAP_BYTES}"):
        ag.put(inline)
