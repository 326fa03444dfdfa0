"""Free GPU capacity per node and per card, as Ray places a job's GPUs.

Ray's free GPUs (``ray.available_resources()``) are a sum over cards and nodes:
four cards each 0.75 used read as 1.0 GPU free, yet no job of 1 GPU can
start. Ray itself keeps GPU as a unit-instance resource, one instance per
card, each starting at 1.0, and places a demand on instances
(src/ray/common/scheduling/resource_instance_set.cc,
``NodeResourceInstanceSet::TryAllocate``):

* a fraction ``0 < d < 1`` goes to the best-fit card: among the cards with at
  least ``d`` free, the one that leaves the least free, ties to the lowest
  index;
* a whole ``n >= 1`` takes the first ``n`` cards (by index) that are
  entirely free, on one node;
* a fraction above 1 (1.5) is refused.

``GpuCards`` models each node's cards with those rules, so the dispatcher
starts a job only where Ray can place it at once, and ``take`` applies Ray's
own choice, so a tick that launches several jobs predicts where each one goes.
Amounts are kept in Ray's fixed-point units (1e-4 GPU) as integers, so four
quarters fill a card exactly.

Where each running attempt's cards are comes from the attempt itself: its
actor reports its node and the card indices Ray allocated to it
(server/placements.py). An attempt whose placement is not known (just
launched, still pending in Ray, or its actor did not answer) is placed by
Ray's rule after the known ones, in launch order, so the model does not show
free what Ray has given away; one that fits nowhere (pending in Ray) is put on
the cards closest to free, which it will take first. Across several nodes the
node Ray picks is a guess (its scheduler weighs locality and load): the first
node in Ray's node list where the demand fits. The actor's answer corrects it
within seconds of the actor starting.

A job that does not fit can be overtaken indefinitely by smaller ones that
keep filling the cards it waits for. ``reserve`` holds the cards it would
get soonest (those closest to free) for it; ``allows`` then refuses a later
job whose own placement, by Ray's rule on the real state, would land on a
held card, and lets the others pack the remaining cards.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

UNIT = 10_000  # Ray's FixedPoint resolution: 1e-4 of a GPU


def units(gpus: float) -> int:
    """``gpus`` in Ray's fixed-point units."""
    return round(gpus * UNIT)


@dataclass(frozen=True)
class Placement:
    """Where a job's GPUs are: one node, and the indices of its cards there."""

    node_id: str
    cards: tuple[int, ...]


@dataclass(frozen=True)
class Reservation:
    """Cards held for a job that does not fit yet."""

    job_id: int
    gpus: float
    placement: Placement


class GpuCards:
    """Each node's cards and what is free on each, changed by ``occupy`` and ``take``."""

    def __init__(self, nodes: Mapping[str, int]) -> None:
        """From each node's number of cards, in Ray's node order, all free."""
        self._free = {node: [UNIT] * count for node, count in nodes.items()}
        self.reservation: Reservation | None = None

    @classmethod
    def of(
        cls, nodes: Mapping[str, int], running: Iterable[tuple[float, Placement | None]]
    ) -> GpuCards:
        """The cards with the running attempts' GPUs taken: (gpus, placement) in
        launch order; a placement of None is placed by Ray's rule, after the
        known ones (which are facts, whatever order Ray saw them in)."""
        cards = cls(nodes)
        unknown = [gpus for gpus, placement in running if not cards.occupy(gpus, placement)]
        for gpus in unknown:
            if cards.take(gpus) is None:  # pending in Ray: it gets these first
                cards._use(gpus, cards._closest(gpus))
        return cards

    # --- what is free -------------------------------------------------------------------

    def free_by_card(self) -> dict[str, tuple[float, ...]]:
        """Each node's cards, what is free on each (over-committed shows 0)."""
        return {
            node: tuple(max(left, 0) / UNIT for left in cards) for node, cards in self._free.items()
        }

    def most_on_one_node(self) -> int:
        """The most cards one node has: no job asking more can ever start."""
        return max((len(cards) for cards in self._free.values()), default=0)

    def free_total(self) -> float:
        return sum(sum(cards) for cards in self.free_by_card().values())

    def describe_free(self) -> str:
        """What is free card by card, most first: "0.25 on each of 4", "1 on 1, 0.5 on 2"."""
        counts = Counter(free for cards in self.free_by_card().values() for free in cards)
        if not counts:
            return "no GPU"
        if len(counts) == 1:
            ((free, count),) = counts.items()
            return f"{free:g} on each of {count}"
        by_free = sorted(counts.items(), reverse=True)
        return ", ".join(f"{free:g} on {count}" for free, count in by_free)

    # --- Ray's placement ----------------------------------------------------------------

    def fits(self, gpus: float) -> bool:
        """Whether Ray could place ``gpus`` now."""
        return gpus <= 0 or self._ray_choice(gpus) is not None

    def allows(self, gpus: float) -> bool:
        """Whether ``gpus`` fits and Ray would place it on no held card."""
        if gpus <= 0:
            return True
        choice = self._ray_choice(gpus)
        return choice is not None and not self.lands_on_held(choice)

    def take(self, gpus: float) -> Placement | None:
        """Place ``gpus`` where Ray would and take it; None (nothing taken) if it
        does not fit, or for no GPU."""
        choice = self._ray_choice(gpus) if gpus > 0 else None
        if choice is not None:
            self._use(gpus, choice)
        return choice

    def occupy(self, gpus: float, placement: Placement | None) -> bool:
        """Take ``gpus`` where a running attempt said it is; False (nothing taken)
        when the placement is unknown or names cards this model does not have."""
        if placement is None:
            return False
        if gpus <= 0:
            return True
        node = self._free.get(placement.node_id)
        _, count = demand_shape(gpus)
        if (
            node is None
            or len(placement.cards) != count
            or not all(0 <= card < len(node) for card in placement.cards)
        ):
            return False
        self._use(gpus, placement)
        return True

    def _ray_choice(self, gpus: float) -> Placement | None:
        """Where Ray would put ``gpus`` (> 0) now, or None if it would not."""
        demand = units(gpus)
        whole, count = _units_shape(demand)
        for node, cards in self._free.items():
            if whole:
                free = [index for index, left in enumerate(cards) if left >= UNIT]
                if len(free) >= count:
                    return Placement(node, tuple(free[:count]))
            elif count:  # a fraction: best fit, ties to the lowest index
                fitting = [(left - demand, index) for index, left in enumerate(cards)]
                best = min((fit for fit in fitting if fit[0] >= 0), default=None)
                if best is not None:
                    return Placement(node, (best[1],))
        return None

    def _use(self, gpus: float, placement: Placement | None) -> None:
        if placement is None:
            return
        whole, _ = demand_shape(gpus)
        share = UNIT if whole else units(gpus)
        for card in placement.cards:
            self._free[placement.node_id][card] -= share

    # --- holding cards for a job that waits ----------------------------------------------

    def reserve(self, job_id: int, gpus: float) -> Reservation | None:
        """Hold for ``job_id`` the cards its ``gpus`` would get soonest; None where
        no node could ever hold them (no wait would end, so nobody is held up)."""
        closest = self._closest(gpus)
        if closest is None:
            return None
        self.reservation = Reservation(job_id, gpus, closest)
        return self.reservation

    def lands_on_held(self, placement: Placement) -> bool:
        held = self.reservation
        return (
            held is not None
            and held.placement.node_id == placement.node_id
            and not set(held.placement.cards).isdisjoint(placement.cards)
        )

    def _closest(self, gpus: float) -> Placement | None:
        """The cards that would hold ``gpus`` soonest: the most free ones, on the
        node where they have the most free in all (ties: Ray's first node).
        Among equally free cards the highest index is held, since Ray's best
        fit and whole-card choices both take the lowest first: other jobs keep
        the cards Ray would give them."""
        _, count = demand_shape(gpus)
        if not count:
            return None
        best: tuple[int, Placement] | None = None
        for node, cards in self._free.items():
            if len(cards) < count:
                continue
            by_free = sorted(range(len(cards)), key=lambda index: (cards[index], index))
            chosen = by_free[-count:]
            total = sum(cards[index] for index in chosen)
            if best is None or total > best[0]:
                best = (total, Placement(node, tuple(sorted(chosen))))
        return best[1] if best is not None else None


def demand_shape(gpus: float) -> tuple[bool, int]:
    """(whole, cards): whole cards and how many, or a fraction on one card;
    (False, 0) for what Ray refuses (a fraction above one card) or no GPU."""
    return _units_shape(units(gpus))


def _units_shape(demand: int) -> tuple[bool, int]:
    if demand <= 0:
        return False, 0
    if demand < UNIT:
        return False, 1
    if demand % UNIT:
        return False, 0
    return True, demand // UNIT
