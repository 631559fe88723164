"""A pipeline of actors passing ObjectRefs: data flows worker to worker, not via the driver.

source -> transform (an actor per stage) -> sink. Each stage gets the previous stage's
ObjectRef as an argument; actorgrid resolves it before the call runs.
"""

from __future__ import annotations

import numpy as np

import actorgrid as ag


@ag.remote
def load(chunk: int) -> np.ndarray:
    rng = np.random.default_rng(chunk)
    return rng.random(250_000)


@ag.remote
class Normalizer:
    def __init__(self) -> None:
        self.seen = 0

    def normalize(self, data: np.ndarray) -> np.ndarray:
        self.seen += 1
        return (data - data.mean()) / data.std()


@ag.remote
class Summary:
    def __init__(self) -> None:
        self.rows: list[tuple[int, float, float]] = []

    def add(self, chunk: int, data: np.ndarray) -> int:
        self.rows.append((chunk, float(data.mean()), float(data.std())))
        return len(self.rows)

    def report(self) -> list[tuple[int, float, float]]:
        return sorted(self.rows)


def main() -> None:
    with ag.init(num_workers=2):
        normalizer = Normalizer.remote()
        summary = Summary.remote()
        done = []
        for chunk in range(8):
            raw = load.remote(chunk)  # a ref, never fetched by the driver
            normalized = normalizer.normalize.remote(raw)  # the ref goes to the actor
            done.append(summary.add.remote(chunk, normalized))
        ag.get(done, timeout=60)
        for chunk, mean, std in ag.get(summary.report.remote()):
            print(f"chunk {chunk}: mean {mean:+.2e} std {std:.3f}")
            assert abs(mean) < 1e-9 and abs(std - 1) < 1e-9


if __name__ == "__main__":
    main()
