"""The worker pool of distributed_computing, on actorgrid: one instance of a worker class per
worker (per GPU, on a cluster with GPUs), jobs spread over them, results fed back to all.

python examples/gpu_pool.py
"""

from __future__ import annotations

import os
from typing import Any

import actorgrid as ag


class WorkerClass:
    def __init__(self, init_data: dict[str, int]) -> None:
        # Heavy preparation work is done here, once for each worker.
        self.dataset = [x % init_data["classes"] for x in range(init_data["size"])]
        self.cache: list[float] = []

    def run(self, parameters: tuple[float, int]) -> dict[str, Any]:
        # The work is done here: "train" with these parameters and evaluate.
        lr, depth = parameters
        score = 1.0 - abs(lr - 0.1) - abs(depth - 4) / 10 + sum(self.dataset) * 1e-9
        return {"lr": lr, "depth": depth, "score": round(score, 3), "cached": len(self.cache)}

    def handle_update(self, result: dict[str, Any]) -> None:
        # Updates sent by the pool owner arrive between jobs, in the order sent.
        self.cache.append(result["score"])


def main() -> None:
    init_data = {"size": 10_000, "classes": 10}
    parameter_sets = [(lr, depth) for lr in (0.01, 0.1, 0.3) for depth in (2, 4, 8)]
    with ag.init(num_workers=2), ag.ActorPool(WorkerClass, args=(init_data,)) as pool:
        print(f"pool: {pool.workers_count()} workers on {pool.nodes_count()} node(s)")
        results = pool.map(parameter_sets)
        best = max(results, key=lambda r: r["score"])
        print(
            f"map: {len(results)} results in input order; best score {best['score']} "
            f"(lr={best['lr']}, depth={best['depth']})"
        )
        # Feed every result back to every worker, as it arrives.
        shared = []
        for result in pool.imap_unordered(parameter_sets):
            shared.append(result)
            pool.update_workers(result)
        print(f"imap_unordered: {len(shared)} results, each sent to every worker")
        caches = {r["cached"] for r in pool.map([(0.1, 4)] * pool.workers_count())}
        print(f"every worker's cache now holds {caches} results")
        print(f"this driver is pid {os.getpid()}; the pool closes with the block")


if __name__ == "__main__":
    main()
