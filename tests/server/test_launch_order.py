"""LaunchOrder: the same choices as next_job over the candidates that fit, one
launch after another, as a dispatcher's tick takes them."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from server.scheduling import Candidate, FifoOrder, LaunchOrder, class_priorities, next_job

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
AGING = 600.0

candidates_strategy = st.lists(
    st.builds(
        lambda owner, priority, age, cpus, gpus: (owner, priority, age, cpus, gpus),
        st.integers(1, 4),
        st.integers(-2, 3),
        st.integers(0, 5000),  # seconds waited: aging lifts some by up to 8 points
        st.sampled_from([0.5, 1.0, 2.0, 4.0]),
        st.sampled_from([0.0, 0.0, 0.25, 0.5, 1.0]),
    ),
    max_size=40,
)


def make(rows: list[tuple[int, int, int, float, float]]) -> list[Candidate]:
    return [
        Candidate(n, owner, priority, NOW - timedelta(seconds=age), cpus, gpus, None)
        for n, (owner, priority, age, cpus, gpus) in enumerate(rows, start=1)
    ]


def launches(
    choose: Callable[[Callable[[Candidate], bool]], Candidate | None],
    *,
    free: dict[str, float],
    quota: float | None,
    refused: set[int],
    running: Counter[int],
) -> list[int]:
    """The dispatcher's loop: choose, claim (the ``refused`` are taken by someone
    else), and take the launched job's resources from what is free."""
    held: defaultdict[int, float] = defaultdict(float)
    chosen: list[int] = []

    def fits(c: Candidate) -> bool:
        return (
            c.cpus <= free["CPU"]
            and c.gpus <= free["GPU"]
            and (quota is None or c.gpus == 0 or held[c.owner_id] + c.gpus <= quota)
        )

    while (choice := choose(fits)) is not None:
        chosen.append(choice.job_id)
        if choice.job_id in refused:
            continue
        free["CPU"] -= choice.cpus
        free["GPU"] -= choice.gpus
        running[choice.owner_id] += 1
        held[choice.owner_id] += choice.gpus
    return chosen


@settings(max_examples=300, deadline=None)
@given(
    rows=candidates_strategy,
    cpus=st.sampled_from([0.0, 1.0, 3.0, 8.0, 100.0]),
    gpus=st.sampled_from([0.0, 0.5, 1.0, 2.0, 100.0]),
    quota=st.sampled_from([None, 0.5, 1.0]),
    used=st.dictionaries(st.integers(1, 4), st.sampled_from([0.0, 60.0, 3600.0])),
    running=st.dictionaries(st.integers(1, 4), st.integers(0, 3)),
    refused=st.sets(st.integers(1, 40), max_size=5),
)
def test_launch_order_chooses_as_next_job_does(rows, cpus, gpus, quota, used, running, refused):
    candidates = make(rows)

    left = list(candidates)
    reference_running = Counter(running)
    # The classes' effective priorities are counted once a tick, over all its candidates.
    classes = class_priorities(candidates, NOW, AGING)

    def by_next_job(fits):
        """The dispatcher's loop as it was: next_job over all that fit, each time."""
        choice = next_job(
            [c for c in left if fits(c)],
            used=used,
            running=reference_running,
            now=NOW,
            aging_seconds=AGING,
            classes=classes,
        )
        if choice is not None:
            left.remove(choice)
        return choice

    expected = launches(
        by_next_job,
        free={"CPU": cpus, "GPU": gpus},
        quota=quota,
        refused=refused,
        running=reference_running,
    )

    order_running = Counter(running)
    order = LaunchOrder(candidates, used=used, running=order_running, now=NOW, aging_seconds=AGING)
    got = launches(
        order.next,
        free={"CPU": cpus, "GPU": gpus},
        quota=quota,
        refused=refused,
        running=order_running,
    )
    assert got == expected


def test_owners_take_turns_and_a_job_too_big_now_is_passed_over():
    alice = [Candidate(n, 1, 0, NOW - timedelta(seconds=100 - n), 1.0, 0.0, None) for n in (1, 2)]
    bob = [
        Candidate(11, 2, 0, NOW - timedelta(seconds=200), 4.0, 0.0, None),  # oldest, too big
        Candidate(12, 2, 0, NOW - timedelta(seconds=50), 1.0, 0.0, None),
    ]
    running: Counter[int] = Counter()
    order = LaunchOrder(alice + bob, used={}, running=running, now=NOW, aging_seconds=AGING)
    taken = []
    while choice := order.next(lambda c: c.cpus <= 2):
        taken.append(choice.job_id)
        running[choice.owner_id] += 1
    assert taken == [1, 12, 2]  # 11 never fits; bob's turn comes after alice's first
    assert order.next(lambda c: c.cpus <= 4).job_id == 11  # still there, had it fitted


def test_fifo_takes_the_oldest_that_fits_whatever_the_priority():
    jobs = [
        Candidate(1, 1, 5, NOW - timedelta(seconds=10), 1.0, 0.0, None),  # newest, urgent
        Candidate(2, 2, -3, NOW - timedelta(seconds=300), 1.0, 0.0, None),  # oldest
        Candidate(3, 1, 0, NOW - timedelta(seconds=200), 8.0, 0.0, None),  # too big now
        Candidate(4, 2, 0, NOW - timedelta(seconds=100), 1.0, 0.0, None),
    ]
    order = FifoOrder(jobs)
    taken = []
    while choice := order.next(lambda c: c.cpus <= 2):
        taken.append(choice.job_id)
    assert taken == [2, 4, 1]
    assert order.next(lambda _: True).job_id == 3
    assert order.next(lambda _: True) is None


@given(candidates_strategy)
@settings(max_examples=50, deadline=None)
def test_first_then_take_is_next_in_both_orders(rows):
    """The dispatcher looks at the first job that may start before taking it
    (to hold GPU cards for it if they do not fit): the same choices as next."""

    def fits(c: Candidate) -> bool:
        return c.cpus <= 2.0

    for make_order in (
        lambda: LaunchOrder(make(rows), used={}, running={}, now=NOW, aging_seconds=AGING),
        lambda: FifoOrder(make(rows)),
    ):
        peeking, taking = make_order(), make_order()
        while (seen := peeking.first(fits)) is not None:
            assert peeking.first(fits) == seen  # looking takes nothing
            assert peeking.take(seen) == seen == taking.next(fits)
        assert taking.next(fits) is None
