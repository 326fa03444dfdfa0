"""GpuCards on hand-made states: Ray's placement rules per card and per node, the
running attempts' placements known or not, and cards held for a waiting job."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from server.gpu_cards import GpuCards, Placement


def node(*used: float, name: str = "n1", cards: GpuCards | None = None) -> GpuCards:
    """One node whose cards have ``used`` taken, one fraction per card."""
    cards = cards or GpuCards({name: len(used)})
    for index, amount in enumerate(used):
        if amount:
            assert cards.occupy(amount, Placement(name, (index,)))
    return cards


def test_four_cards_three_quarters_used_hold_no_whole_gpu_though_one_is_free_in_sum():
    cards = node(0.75, 0.75, 0.75, 0.75)

    assert cards.free_total() == 1.0
    assert not cards.fits(1.0)
    assert cards.take(1.0) is None
    assert cards.fits(0.25)
    assert cards.describe_free() == "0.25 on each of 4"


def test_a_fraction_goes_to_the_best_fitting_card_ties_to_the_lowest_index():
    cards = node(0.0, 0.5, 0.75, 0.5)  # free: 1, 0.5, 0.25, 0.5

    assert cards.take(0.25) == Placement("n1", (2,))  # leaves nothing: the best fit
    assert cards.take(0.5) == Placement("n1", (1,))  # cards 1 and 3 tie
    assert cards.take(0.5) == Placement("n1", (3,))
    assert cards.take(0.5) == Placement("n1", (0,))  # the only card left with 0.5
    assert cards.describe_free() == "0.5 on 1, 0 on 3"


def test_whole_gpus_take_the_first_entirely_free_cards_of_one_node():
    cards = node(0.5, 0.0, 0.0, 0.0)
    assert cards.take(2.0) == Placement("n1", (1, 2))
    assert cards.take(1.0) == Placement("n1", (3,))
    assert not cards.fits(1.0)

    # Two nodes with one free card each: two cards free in all, but not on one node.
    split = node(
        0.25, 0.0, name="a", cards=node(0.0, 0.5, name="b", cards=GpuCards({"a": 2, "b": 2}))
    )
    assert not split.fits(2.0)
    assert split.take(1.0) == Placement("a", (1,))  # Ray's first node where it fits
    assert split.take(1.0) == Placement("b", (0,))


def test_a_fraction_above_one_card_is_refused_and_nothing_is_held_for_it():
    cards = GpuCards({"n1": 4})

    assert not cards.fits(1.5)
    assert cards.reserve(job_id=1, gpus=1.5) is None
    assert cards.reserve(job_id=1, gpus=8.0) is None  # more cards than any node has
    assert cards.fits(0.0) and cards.take(0.0) is None  # no GPU: nothing to place


def test_running_attempts_are_placed_where_they_said_and_the_unknown_ones_by_rays_rule():
    cards = GpuCards.of(
        {"n1": 2},
        [
            (0.75, None),  # launched first, not answered yet
            (0.5, Placement("n1", (1,))),
            (0.5, Placement("gone", (0,))),  # a node no longer listed: unknown
        ],
    )
    # Known first: card 1 has 0.5 left; then 0.75 goes to card 0 (the only fit),
    # and the 0.5 whose node is gone takes card 1's last half.
    assert cards.describe_free() == "0.25 on 1, 0 on 1"


def test_an_attempt_pending_in_ray_takes_the_cards_closest_to_free():
    running = [(0.75, Placement("n1", (0,))), (0.5, Placement("n1", (1,))), (1.0, None)]
    cards = GpuCards.of({"n1": 2}, running)

    # The 1-GPU attempt fits nowhere yet: card 1, the closer to free, is its
    # next, so nothing else may count on it.
    assert cards.free_total() == 0.25
    assert cards.describe_free() == "0.25 on 1, 0 on 1"


def test_a_placement_naming_cards_the_node_lacks_counts_as_unknown():
    cards = GpuCards({"n1": 2})

    assert not cards.occupy(0.5, Placement("n1", (2,)))
    assert not cards.occupy(2.0, Placement("n1", (0,)))  # two cards, one named
    assert cards.free_total() == 2.0


def test_held_cards_refuse_a_fraction_ray_would_put_there_and_allow_one_it_puts_elsewhere():
    cards = node(0.75, 0.5, 0.75, 0.25)  # free: 0.25, 0.5, 0.25, 0.75
    reservation = cards.reserve(job_id=7, gpus=1.0)
    assert reservation is not None
    assert reservation.placement == Placement("n1", (3,))  # the card closest to free

    assert cards.allows(0.25)  # best fit: card 0
    assert cards.take(0.25) == Placement("n1", (0,))
    assert cards.take(0.25) == Placement("n1", (2,))
    assert cards.allows(0.5)  # card 1
    assert cards.take(0.5) == Placement("n1", (1,))
    # Only the held card has room now: Ray would put the next quarter there.
    assert cards.fits(0.25)
    assert not cards.allows(0.25)
    assert not cards.allows(1.0)


def test_equally_free_cards_hold_the_highest_index_which_rays_choices_reach_last():
    cards = node(0.75, 0.75, 0.75, 0.75)
    reservation = cards.reserve(job_id=7, gpus=1.0)
    assert reservation is not None and reservation.placement == Placement("n1", (3,))

    taken = [cards.take(0.25) for _ in range(3)]
    assert taken == [Placement("n1", (index,)) for index in range(3)]
    assert not cards.allows(0.25)


def test_whole_gpus_are_held_on_the_node_with_the_most_free_on_its_freest_cards():
    cards = node(0.5, 0.75, 0.0, name="a", cards=GpuCards({"a": 3, "b": 2}))
    cards = node(0.25, 0.5, name="b", cards=cards)
    # a's two freest cards: 1 + 0.5; b's: 0.75 + 0.5.
    reservation = cards.reserve(job_id=3, gpus=2.0)
    assert reservation is not None and reservation.placement == Placement("a", (0, 2))

    assert not cards.allows(1.0)  # Ray's first whole card is a's card 2: held
    assert not cards.allows(0.5)  # best fit: a's card 0 (0.5 free), held
    assert cards.allows(0.25)  # best fit: a's card 1 (0.25 free)
    assert not cards.lands_on_held(Placement("b", (0,)))


@given(st.lists(st.sampled_from([0.25, 0.5, 0.75, 1.0, 2.0, 1.5]), max_size=30))
def test_taking_what_fits_never_gives_a_card_more_than_it_has(demands: list[float]):
    cards = GpuCards({"a": 2, "b": 3})
    used: Counter[tuple[str, int]] = Counter()
    for gpus in demands:
        fits = cards.fits(gpus)
        placement = cards.take(gpus)
        assert (placement is not None) == fits
        if placement is not None:
            for card in placement.cards:
                used[placement.node_id, card] += min(gpus, 1.0)
    assert all(amount <= 1.0 for amount in used.values()), used
    assert cards.free_total() == 5 - sum(used.values())
