"""Each attempt runs in its own detached, named Ray actor.

Detached, so the attempt outlives the process that launched it: a dispatcher
or API server restart leaves running jobs alone, and the new dispatcher finds
them again by name (``silo-job-<id>-attempt-<n>`` in the ``silo`` namespace).
Results travel through the API, never through Ray, so nobody needs to hold the
actor's return value; the actor exits by itself when the attempt is over.
"""

from __future__ import annotations

import os
from typing import Any

import ray

from silo_contract.order import AttemptOrder
from workers.ray_cluster import NAMESPACE


def actor_name(job_id: int, attempt: int) -> str:
    return f"silo-job-{job_id}-attempt-{attempt}"


# max_concurrency 2: pid() and devices() answer while run() works (tests and
# operators use them).
# Ray's type stubs know no actor options on ray.remote (max_concurrency, .options).
@ray.remote(max_restarts=0, max_task_retries=0, max_concurrency=2)  # type: ignore[call-overload]
class AttemptActor:
    def run(self, order: dict) -> None:
        # The engine (torch) and Tune load only where jobs run, not in the dispatcher.
        from workers.attempt import run_attempt
        from workers.oracle_tune import search_on_tune

        run_attempt(AttemptOrder(**order), oracle_search=search_on_tune)
        ray.actor.exit_actor()

    def pid(self) -> int:
        return os.getpid()

    def devices(self) -> dict[str, Any]:
        """The GPUs Ray gave this attempt and what CUDA is shown of them."""
        return {
            "gpu_ids": [str(gpu) for gpu in ray.get_gpu_ids()],
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }


def launch(order: AttemptOrder) -> ray.actor.ActorHandle:
    """Start the attempt in a new detached actor holding the job's resources."""
    options: dict = {
        "name": actor_name(order.job_id, order.attempt),
        "namespace": NAMESPACE,
        "lifetime": "detached",
        "num_cpus": order.cpus,
        "num_gpus": order.gpus,
    }
    if order.memory_gb is not None:
        options["memory"] = int(order.memory_gb * 1024**3)
    actor = AttemptActor.options(**options).remote()  # type: ignore[attr-defined]
    actor.run.remote(order.to_dict())
    return actor


def find(job_id: int, attempt: int) -> ray.actor.ActorHandle | None:
    """The attempt's actor if it is still alive (or starting), else None."""
    try:
        return ray.get_actor(actor_name(job_id, attempt), namespace=NAMESPACE)
    except ValueError:
        return None


def live_actor_names() -> frozenset[str]:
    """The names of this service's actors that are alive or starting, in one call.

    Ray's GCS lists a named actor from its creation until it dies (a dead
    actor's name is not listed), as ``find`` finds it; one list per dispatcher
    tick replaces a ``get_actor`` round trip per running job. All namespaces
    are listed and ours kept, because the driver's own namespace need not be
    ours (``find`` names it too)."""
    return frozenset(
        entry["name"]
        for entry in ray.util.list_named_actors(all_namespaces=True)
        if entry["namespace"] == NAMESPACE
    )


def kill(job_id: int, attempt: int) -> bool:
    """Kill the attempt's actor at once; False if it was already gone."""
    actor = find(job_id, attempt)
    if actor is None:
        return False
    ray.kill(actor, no_restart=True)
    return True


def free_resources() -> dict[str, float]:
    """What the cluster has free now ({"CPU": .., "GPU": ..})."""
    free = ray.available_resources()
    return {"CPU": free.get("CPU", 0.0), "GPU": free.get("GPU", 0.0)}


def node_sizes() -> list[dict[str, float]]:
    """What each live node offers in all, busy or not ({"CPU", "GPU", "memory_gb"}).

    An actor runs on one node, so the largest node bounds what a job can ask.
    ``ray.nodes()`` reads Ray's node table; it needs no dashboard, unlike the
    state API, and the local head runs none."""
    return [
        {
            "CPU": node["Resources"].get("CPU", 0.0),
            "GPU": node["Resources"].get("GPU", 0.0),
            "memory_gb": node["Resources"].get("memory", 0.0) / 1024**3,  # Ray counts bytes
        }
        for node in ray.nodes()
        if node["Alive"]
    ]
