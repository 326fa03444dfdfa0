"""ray_actor.live_actor_names on a real local Ray: what the dispatcher's reconcile
counts as alive (an actor running or still being created) and as gone."""

from __future__ import annotations

import time

import pytest
import ray

from workers import ray_actor
from workers.ray_cluster import NAMESPACE


@ray.remote(num_cpus=0)
class Idle:
    def ready(self) -> bool:
        return True


def named(name: str, namespace: str = NAMESPACE, **options) -> ray.actor.ActorHandle:
    return Idle.options(name=name, namespace=namespace, lifetime="detached", **options).remote()


@pytest.mark.usefixtures("local_ray")
def test_live_and_starting_actors_are_listed_and_a_killed_one_is_not():
    running = named(ray_actor.actor_name(9001, 1))
    ray.get(running.ready.remote(), timeout=60)
    # Waits for a resource no node has: created in the GCS, never started.
    starting = named(ray_actor.actor_name(9002, 1), resources={"no-such-resource": 1})
    elsewhere = named(ray_actor.actor_name(9003, 1), namespace="not-silo")
    killed = named(ray_actor.actor_name(9004, 1))
    ray.get(killed.ready.remote(), timeout=60)
    ray.kill(killed, no_restart=True)
    try:
        deadline = time.monotonic() + 30
        while ray_actor.actor_name(9004, 1) in ray_actor.live_actor_names():
            assert time.monotonic() < deadline, "a killed actor stays listed"
            time.sleep(0.1)
        names = ray_actor.live_actor_names()
        assert ray_actor.actor_name(9001, 1) in names
        assert ray_actor.actor_name(9002, 1) in names
        assert ray_actor.actor_name(9003, 1) not in names  # another namespace
        # The same verdicts as a lookup by name, one actor at a time.
        for job_id in (9001, 9002, 9004):
            found = ray_actor.find(job_id, 1) is not None
            assert found == (ray_actor.actor_name(job_id, 1) in names), job_id
    finally:
        for actor in (running, starting, elsewhere):
            ray.kill(actor, no_restart=True)
