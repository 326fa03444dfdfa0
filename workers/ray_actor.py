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


# max_concurrency 2: pid() and devices() answer while run() works (the
# dispatcher asks each attempt's devices once, for its GPU card model; tests
# and operators use them too).
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
        """The GPUs Ray gave this attempt, where, and what CUDA is shown of them."""
        return devices_here()


def devices_here() -> dict[str, Any]:
    """Inside an actor: its node, the indices of the cards Ray allocated to it
    (``cards``, what the dispatcher's card model counts: Ray's own instance
    numbers, which ``gpu_ids`` are not where the node's CUDA_VISIBLE_DEVICES
    names a subset, such as "2,3"), the GPU ids and what CUDA is shown."""
    return {
        "node_id": ray.get_runtime_context().get_node_id(),
        "cards": _allocated_cards(),
        "gpu_ids": [str(gpu) for gpu in ray.get_gpu_ids()],
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def _allocated_cards() -> list[int] | None:
    """The GPU instances Ray allocated to this worker; None if this Ray does not
    say (the core worker's resource ids are not public API: the dispatcher then
    places the attempt by Ray's rule, as one not yet answered)."""
    try:
        from ray._private.worker import global_worker

        # Set once the worker connects; Ray's stubs do not declare it.
        allocated = global_worker.core_worker.resource_ids()  # type: ignore[attr-defined]
        return sorted(int(card) for card, _ in allocated["GPU"])
    except (AttributeError, ImportError, KeyError, TypeError, ValueError):
        return None


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


def ask_devices(actor: ray.actor.ActorHandle) -> ray.ObjectRef | None:
    """Ask a running attempt's actor for its devices; the answer comes when the
    actor runs (never, if it ends first). None for an actor that cannot answer
    (another class under our name, such as a benchmark's stand-in)."""
    try:
        return actor.devices.remote()
    except AttributeError:
        return None


def answered(asked: list[ray.ObjectRef]) -> list[ray.ObjectRef]:
    """Those of ``asked`` that have their answer (or their error), without waiting."""
    if not asked:
        return []
    ready, _ = ray.wait(asked, num_returns=len(asked), timeout=0)
    return ready


def answer(ref: ray.ObjectRef) -> Any:
    """An answered ``ask_devices``: the devices, or None if the actor died first."""
    try:
        return ray.get(ref, timeout=0)
    except ray.exceptions.RayError:
        return None


def free_resources() -> dict[str, float]:
    """What the cluster has free now ({"CPU": .., "GPU": ..})."""
    free = ray.available_resources()
    return {"CPU": free.get("CPU", 0.0), "GPU": free.get("GPU", 0.0)}


def node_sizes() -> dict[str, dict[str, float]]:
    """What each live node offers in all, busy or not ({"CPU", "GPU", "memory_gb"}),
    by node id, in Ray's order.

    An actor runs on one node, so the largest node bounds what a job can ask.
    ``ray.nodes()`` reads Ray's node table; it needs no dashboard, unlike the
    state API, and the local head runs none."""
    return {
        node["NodeID"]: {
            "CPU": node["Resources"].get("CPU", 0.0),
            "GPU": node["Resources"].get("GPU", 0.0),
            "memory_gb": node["Resources"].get("memory", 0.0) / 1024**3,  # Ray counts bytes
        }
        for node in ray.nodes()
        if node["Alive"]
    }
