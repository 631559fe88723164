"""A dozen typical ``multiprocessing.Pool`` programs, run with either pool.

    python stdlib_programs.py mp    # multiprocessing.Pool
    python stdlib_programs.py ag    # ag.Pool on an embedded two-worker cluster

Each program takes the pool class and returns what it would print; the script prints one JSON
object of program name -> output, which tests/_pool/test_stdlib_programs.py compares. The
programs are written as a standard-library user writes them: the pool class is the only thing
that differs between the two runs.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

PROGRAMS: dict[str, Callable[[Any], Any]] = {}


def program(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    PROGRAMS[fn.__name__] = fn
    return fn


def square(x: int) -> int:
    return x * x


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"bad item {x}")
    return x


def slow(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


BASE = 0


def set_base(value: int) -> None:
    global BASE
    BASE = value


def add_base(x: int) -> int:
    return BASE + x


def describe(exc: BaseException) -> dict[str, Any]:
    text = "".join(traceback.format_exception(exc))
    return {
        "is_value_error": isinstance(exc, ValueError),
        "args": list(exc.args),
        "traceback_names_function": "in fail_on_three" in text,
    }


@program
def map_squares(Pool: Any) -> Any:
    with Pool(2) as p:
        return p.map(square, range(20))


@program
def map_with_chunksize(Pool: Any) -> Any:
    with Pool(2) as p:
        return p.map(square, range(50), chunksize=7)


@program
def imap_with_chunksize(Pool: Any) -> Any:
    with Pool(2) as p:
        return list(p.imap(square, range(30), chunksize=4))


@program
def imap_unordered(Pool: Any) -> Any:
    with Pool(2) as p:
        return sorted(p.imap_unordered(square, range(30)))


@program
def starmap_pow(Pool: Any) -> Any:
    with Pool(2) as p:
        return p.starmap(pow, [(2, 3), (3, 2), (10, 2)])


@program
def apply_and_apply_async_callbacks(Pool: Any) -> Any:
    seen: list[int] = []
    with Pool(2) as p:
        results = [p.apply_async(square, (i,), callback=seen.append) for i in range(6)]
        values = [r.get(timeout=60) for r in results]
        return {"values": values, "callbacks": sorted(seen), "apply": p.apply(divmod, (17, 5))}


@program
def map_async_callback(Pool: Any) -> Any:
    got: list[Any] = []
    with Pool(2) as p:
        r = p.map_async(square, range(5), callback=got.append)
        r.wait(60)
        return {"get": r.get(), "callback": got, "successful": r.successful()}


@program
def error_callback(Pool: Any) -> Any:
    errors: list[BaseException] = []
    with Pool(2) as p:
        r = p.apply_async(fail_on_three, (3,), error_callback=errors.append)
        r.wait(60)
        return {"successful": r.successful(), "errors": [describe(e) for e in errors]}


@program
def exception_with_traceback(Pool: Any) -> Any:
    with Pool(2) as p:
        try:
            p.map(fail_on_three, range(10))
        except ValueError as exc:
            return describe(exc)
    return "no error"


@program
def imap_error_then_continue(Pool: Any) -> Any:
    out: list[Any] = []
    with Pool(2) as p:
        it = p.imap(fail_on_three, range(6))
        for _ in range(6):
            try:
                out.append(it.next(timeout=60))
            except ValueError as exc:
                out.append(exc.args[0])
    return out


def numbers_then_error(n: int) -> Any:
    yield from range(n)
    raise RuntimeError("input broke")


@program
def imap_input_that_raises(Pool: Any) -> Any:
    out: list[Any] = []
    with Pool(2) as p:
        it = p.imap(square, numbers_then_error(3))
        while True:
            try:
                out.append(it.next(timeout=60))
            except StopIteration:
                break
            except RuntimeError as exc:
                out.append(str(exc))
    return out


@program
def async_result_timeout(Pool: Any) -> Any:
    with Pool(1) as p:
        r = p.apply_async(slow, (1.5,))
        try:
            r.get(timeout=0.05)
            timed_out = False
        except multiprocessing.TimeoutError:
            timed_out = True
        try:
            r.successful()
            not_ready = False
        except ValueError:
            not_ready = True
        ready_before = r.ready()
        return {
            "timed_out": timed_out,
            "successful_raised": not_ready,
            "ready": ready_before,
            "later": r.get(60),
        }


@program
def initializer_with_global(Pool: Any) -> Any:
    with Pool(2, initializer=set_base, initargs=(100,)) as p:
        return p.map(add_base, range(8))


@program
def close_then_join(Pool: Any) -> Any:
    p = Pool(2)
    results = [p.apply_async(square, (i,)) for i in range(5)]
    p.close()
    try:
        p.apply(square, (1,))
        refused = False
    except ValueError:
        refused = True
    p.join()
    return {"results": [r.get(0) for r in results], "refused_after_close": refused}


@program
def join_before_close_refused(Pool: Any) -> Any:
    p = Pool(2)
    try:
        p.join()
        refused = False
    except ValueError:
        refused = True
    p.terminate()
    p.join()
    return refused


@program
def context_manager_exit_terminates(Pool: Any) -> Any:
    with Pool(2) as p:
        inside = p.map(square, range(4))
    try:
        p.map(square, range(4))
        usable = True
    except ValueError:
        usable = False
    return {"inside": inside, "usable_after_exit": usable}


@program
def empty_inputs(Pool: Any) -> Any:
    with Pool(2) as p:
        return {
            "map": p.map(square, []),
            "imap": list(p.imap(square, [])),
            "starmap": p.starmap(pow, []),
        }


def main() -> None:
    which = sys.argv[1]
    if which == "mp":
        pool_class: Any = multiprocessing.Pool
        outputs = {name: fn(pool_class) for name, fn in PROGRAMS.items()}
    else:
        import actorgrid as ag

        with ag.init(num_workers=2):
            outputs = {name: fn(ag.Pool) for name, fn in PROGRAMS.items()}
    print(json.dumps({"pid": os.getpid(), "outputs": outputs}))


if __name__ == "__main__":
    main()
