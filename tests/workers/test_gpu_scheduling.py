"""GPU scheduling end to end: jobs asking for GPUs, through the HTTP API and the
real dispatcher, on the session's local Ray with declared GPUs (no GPU needed).

Where an order is the point (priority, aging, fair share), long jobs hold the
GPUs while the contenders queue, and the test frees one GPU by cancelling one
holder: the dispatcher hands it to exactly one contender, whose start is then
compared with the others' queue states. The database plays no part in these
decisions beyond what the other tests cover, so they run on SQLite only.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter

import pytest
import ray
from declared_gpus import GPUS
from tiny_jobs import SPEC, finished, sqlite_only, wait_for

from workers import ray_actor

pytestmark = [sqlite_only, pytest.mark.usefixtures("dispatching")]


@pytest.fixture
def cancel_grace() -> float:
    """A job cancelled while its worker still starts (imports, data) sees the
    cancel only once it trains; the tests end their jobs sooner by killing."""
    return 2.0


# Ends by itself in a few seconds (after its actor starts).
SHORT = SPEC
# Runs until cancelled (minutes of dense training); stops at its next epoch.
LONG = {
    **SPEC,
    "training": {**SPEC["training"], "batch_size": 16, "dense": {"epochs": 1000}},
}
CPUS = 0.25  # small enough that CPUs never decide: 2 * GPUS jobs use 1 of 2


SEEDS = itertools.count(100)


def submit(client, spec: dict, gpus: float, priority: int = 0) -> int:
    """Submit ``spec`` with a seed of its own: jobs that share a dense network
    wait for one another's dense training, which is not what is tested here."""
    resources = {"cpus": CPUS, "gpus": gpus}
    body = {"spec": {**spec, "seed": next(SEEDS)}, "priority": priority, "resources": resources}
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def statuses(client) -> dict[int, str]:
    """Every unfinished job's status, read in one statement (one snapshot)."""
    wanted = [("status", s) for s in ("queued", "running", "cancelling")]
    page = client.get("/v1/jobs", params=[*wanted, ("limit", 200)]).json()
    return {job["id"]: job["status"] for job in page["items"]}


def reason(client, job_id: int) -> str | None:
    return client.get(f"/v1/jobs/{job_id}").json()["queue"]["reason"]


def wait_running(client, ids: list[int], timeout: float = 120.0) -> None:
    for job_id in ids:
        wait_for(client, job_id, lambda job: job["status"] == "running", timeout)


def settle(live_server, ids: list[int]) -> None:
    """Cancel what is left of ``ids`` (as an administrator: they may be anyone's)
    and wait until all ended, so that the next test finds the GPUs free."""
    with live_server.client("root") as root:
        for job_id in ids:
            response = root.post(f"/v1/jobs/{job_id}/cancel")
            assert response.status_code in (200, 409), response.text  # 409: ended
        for job_id in ids:
            wait_for(root, job_id, finished)


def free_one_gpu(client, holder: int) -> None:
    """Cancel ``holder`` and wait until it ended: its GPU is free again."""
    assert client.post(f"/v1/jobs/{holder}/cancel").status_code == 200
    wait_for(client, holder, finished)


def started_one_of(client, contenders: list[int], timeout: float = 120.0) -> int:
    """The one contender that started once a GPU came free; the others still wait."""
    deadline = time.monotonic() + timeout
    while True:
        now = statuses(client)
        started = [job for job in contenders if now.get(job) != "queued"]
        if started:
            time.sleep(1.0)  # a few more ticks: nobody else may start
            now = statuses(client)
            assert [job for job in contenders if now.get(job) != "queued"] == started
            assert len(started) == 1, f"{started} all started on one free GPU"
            return started[0]
        assert time.monotonic() < deadline, f"no contender started: {now}"
        time.sleep(0.2)


def devices_of(job_id: int) -> dict | None:
    """The GPUs Ray gave the job's running actor, as it sees them; None if it
    has not started yet or has ended."""
    actor = ray_actor.find(job_id, 1)
    if actor is None:
        return None
    try:
        return ray.get(actor.devices.remote(), timeout=30)
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        return None


def test_fractional_jobs_pack_a_gpu_up_to_one_and_each_sees_the_ids_ray_gave_it(
    live_server,
):
    halves = 2 * GPUS + 2  # two more halves than the GPUs hold
    with live_server.client() as client:
        ids = [submit(client, SHORT, gpus=0.5) for _ in range(halves)]
        devices: dict[int, dict] = {}
        most_running, waiting_reasons = 0, set()
        deadline = time.monotonic() + 300
        while True:
            now = statuses(client)
            running = [job for job in ids if now.get(job) in ("running", "cancelling")]
            if not any(job in now for job in ids):
                break
            assert len(running) <= 2 * GPUS, f"{len(running)} halves on {GPUS} GPUs"
            most_running = max(most_running, len(running))
            for job in running:
                if job not in devices and (seen := devices_of(job)) is not None:
                    devices[job] = seen
            load = Counter(
                gpu for job in running if job in devices for gpu in devices[job]["gpu_ids"]
            )
            assert all(count * 0.5 <= 1.0 for count in load.values()), load
            if len(running) == 2 * GPUS:
                waiting_reasons |= {reason(client, j) for j in ids if now.get(j) == "queued"}
            assert time.monotonic() < deadline, f"jobs still unfinished: {now}"
            time.sleep(0.2)
        ended = [client.get(f"/v1/jobs/{job}").json() for job in ids]
    assert [job["status"] for job in ended] == ["succeeded"] * halves
    assert most_running == 2 * GPUS  # packed: two halves per GPU at once
    assert "waiting for 0.5 GPU (free: 0)" in waiting_reasons
    # Each worker saw one GPU, the one Ray gave it, and CUDA was shown only that one.
    assert len(devices) >= 2 * GPUS
    for seen in devices.values():
        assert len(seen["gpu_ids"]) == 1
        assert seen["cuda_visible_devices"] == seen["gpu_ids"][0]
    assert {gpu for seen in devices.values() for gpu in seen["gpu_ids"]} == {
        str(gpu) for gpu in range(GPUS)
    }


def test_a_whole_gpu_job_waits_for_a_whole_card_though_one_gpu_is_free_in_sum(live_server):
    """Three halves: Ray packs two on one card and the third on the other; ending
    one of the pair leaves half of each card free, one GPU in sum. The 1-GPU job
    is not claimed (still queued, no attempt) and says why, until the other half
    of the pair ends and a card is whole."""
    with live_server.client() as client:
        halves = [submit(client, LONG, gpus=0.5) for _ in range(3)]
        whole = None
        try:
            wait_running(client, halves)
            cards: dict[int, str] = {}
            deadline = time.monotonic() + 60
            while len(cards) < 3:
                assert time.monotonic() < deadline, f"devices unknown: {cards}"
                for job in halves:
                    if job not in cards and (seen := devices_of(job)) is not None:
                        cards[job] = seen["gpu_ids"][0]
            pair = [job for job in halves if Counter(cards.values())[cards[job]] == 2]
            assert len(pair) == 2, cards  # best fit: the second half fills the first card
            free_one_gpu(client, pair[0])  # half of each card free now

            whole = submit(client, LONG, gpus=1.0)
            time.sleep(3.0)  # a few ticks
            job = client.get(f"/v1/jobs/{whole}").json()
            assert (job["status"], job["attempt"]) == ("queued", 0)
            assert reason(client, whole) == "waiting for 1 whole GPU (free: 0.5 on each of 2)"

            free_one_gpu(client, pair[1])
            wait_running(client, [whole])
        finally:
            settle(live_server, [*halves, *([whole] if whole else [])])


@pytest.mark.parametrize("live_settings", [{"owner_gpu_quota": 1.0}])
def test_an_owner_at_the_gpu_quota_waits_while_another_owners_job_runs(live_server):
    with live_server.client("alice") as alice, live_server.client("bob") as bob:
        first, second = (submit(alice, LONG, gpus=1.0) for _ in range(2))
        wait_running(alice, [first])
        theirs = submit(bob, LONG, gpus=1.0)
        try:
            wait_running(bob, [theirs])  # a GPU is free for bob, not for alice
            time.sleep(1.0)
            now = statuses(alice)
            assert (now[first], now[second], now[theirs]) == ("running", "queued", "running")
            assert reason(alice, second) == "the owner's GPU quota (1) is in use"
            free_one_gpu(alice, first)  # alice is under her quota again
            wait_running(alice, [second])
        finally:
            settle(live_server, [first, second, theirs])


def test_a_free_gpu_goes_to_the_higher_priority_then_to_the_owner_with_fewer_gpu_seconds(
    live_server,
):
    """Alice queues a job, then one of higher priority; bob queues one last.
    The first GPU to come free goes to alice's higher priority; the second to
    bob, whose job is the newest but whose owner has used no GPU-seconds while
    alice's job now runs on one."""
    with (
        live_server.client("root") as root,
        live_server.client("alice") as alice,
        live_server.client("bob") as bob,
    ):
        holders = [submit(root, LONG, gpus=1.0) for _ in range(GPUS)]
        wait_running(root, holders)
        low = submit(alice, LONG, gpus=1.0, priority=0)
        high = submit(alice, LONG, gpus=1.0, priority=5)
        theirs = submit(bob, LONG, gpus=1.0, priority=0)
        try:
            free_one_gpu(root, holders[0])
            assert started_one_of(alice, [low, high, theirs]) == high
            free_one_gpu(root, holders[1])
            assert started_one_of(alice, [low, theirs]) == theirs
        finally:
            settle(live_server, [*holders, low, high, theirs])


@pytest.mark.parametrize("live_settings", [{"priority_aging_seconds": 1.0}])
def test_a_low_priority_job_that_waited_long_enough_is_not_starved(live_server):
    """Aging adds one priority per second waited here: a job of priority 0 that
    waited 3 s more outranks one of priority 1 submitted after it."""
    with live_server.client("root") as root, live_server.client("alice") as alice:
        holders = [submit(root, LONG, gpus=1.0) for _ in range(GPUS)]
        wait_running(root, holders)
        low = submit(alice, LONG, gpus=1.0, priority=0)
        time.sleep(3.0)
        high = submit(alice, LONG, gpus=1.0, priority=1)
        try:
            free_one_gpu(root, holders[0])
            assert started_one_of(alice, [low, high]) == low
        finally:
            settle(live_server, [*holders, low, high])


@pytest.mark.parametrize(
    "live_settings", [{"preemption": "fair-share", "preemption_min_runtime_seconds": 1.0}]
)
def test_fair_share_preemption_stops_the_newest_job_of_the_owner_holding_every_gpu(
    live_server,
):
    """Root's jobs hold every GPU when alice's job arrives: root's newer job is
    stopped (its attempt preempted, the job queued again), alice's starts on
    its GPU, and root's job is not handed the GPU back; when alice's ends,
    root's job runs again in a new attempt."""
    with live_server.client("root") as root, live_server.client("alice") as alice:
        holders = []
        for _ in range(GPUS):  # one after another: their start order is known
            holders.append(submit(root, LONG, gpus=1.0))
            wait_running(root, holders[-1:])
        time.sleep(1.5)  # all past the minimum run time: the newest is the one to go
        theirs = submit(alice, LONG, gpus=1.0)
        try:
            wait_running(alice, [theirs])
            newest = holders[-1]
            job = root.get(f"/v1/jobs/{newest}").json()
            assert (job["status"], job["attempt"]) == ("queued", 1)
            assert job["queue"]["reason"] == (
                f"attempt 1 preempted (its GPUs went to job {theirs}, whose owner held "
                "fewer); it will resume from its checkpoint"
            )
            assert all(statuses(root)[j] == "running" for j in holders[:-1])
            time.sleep(2.0)  # ticks go by: neither owner takes the GPU from the other
            now = statuses(root)
            assert (now[theirs], now[newest]) == ("running", "queued")

            free_one_gpu(alice, theirs)
            wait_running(root, [newest])
            assert root.get(f"/v1/jobs/{newest}").json()["attempt"] == 2
        finally:
            settle(live_server, [*holders, theirs])
