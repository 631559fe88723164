"""The worker pool of distributed_computing, on actorgrid: one instance of a worker class per
GPU, each seeing only its own GPU, jobs spread over them, results fed back to all.

python examples/gpu_pool.py            # declares 2 GPUs on the embedded cluster
python examples/gpu_pool.py --gpus 0   # use the GPUs this machine has (nvidia-smi)

Declared GPUs behave as real ones: each worker that owns one gets CUDA_VISIBLE_DEVICES set to
it before any user code runs, so the same script runs unchanged on a machine with GPUs.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import actorgrid as ag


class WorkerClass:
    def __init__(self, init_data: dict[str, int]) -> None:
        # Heavy preparation work is done here, once for each worker.
        self.dataset = [x % init_data["classes"] for x in range(init_data["size"])]
        self.cache: list[float] = []
        # Only this instance's GPU is visible (the seed: "only a single GPU is visible").
        self.gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "")

    def run(self, parameters: tuple[float, int]) -> dict[str, Any]:
        # The work is done here: "train" with these parameters and evaluate.
        lr, depth = parameters
        score = 1.0 - abs(lr - 0.1) - abs(depth - 4) / 10 + sum(self.dataset) * 1e-9
        return {
            "lr": lr,
            "depth": depth,
            "score": round(score, 3),
            "cached": len(self.cache),
            "gpu": self.gpu,
        }

    def handle_update(self, result: dict[str, Any]) -> None:
        # Updates sent by the pool owner arrive between jobs, in the order sent.
        self.cache.append(result["score"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=2, help="GPUs to declare (0: detect)")
    gpus = parser.parse_args().gpus
    resources = {"GPU": gpus} if gpus else None
    init_data = {"size": 10_000, "classes": 10}
    parameter_sets = [(lr, depth) for lr in (0.01, 0.1, 0.3) for depth in (2, 4, 8)]
    cluster = ag.init(num_workers=2, resources=resources)
    # num_gpus=1 and no size: one instance per GPU of the cluster.
    with cluster, ag.ActorPool(WorkerClass, args=(init_data,), num_gpus=1) as pool:
        print(f"pool: {pool.workers_count()} workers on {pool.nodes_count()} node(s)")
        results = pool.map(parameter_sets)
        print(f"GPUs seen by the instances: {sorted({r['gpu'] for r in results})}")
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
