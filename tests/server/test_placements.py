"""The dispatcher's book of where running GPU attempts are, with Ray stood in: each
actor asked once, answers collected without waiting, ended attempts forgotten."""

from __future__ import annotations

import pytest

from server.gpu_cards import Placement
from server.placements import Placements, placement_of
from workers import ray_actor


class StandInRay:
    """Actors by attempt; an answer is ready once ``answers`` holds it."""

    def __init__(self, monkeypatch) -> None:
        self.alive: set[tuple[int, int]] = set()
        self.answers: dict[tuple[int, int], dict | None] = {}
        self.asked: list[tuple[int, int]] = []
        self.found: list[tuple[int, int]] = []
        monkeypatch.setattr(ray_actor, "find", self.find)
        monkeypatch.setattr(ray_actor, "ask_devices", self.ask)
        monkeypatch.setattr(
            ray_actor, "answered", lambda refs: [r for r in refs if r in self.answers]
        )
        monkeypatch.setattr(ray_actor, "answer", self.answers.get)

    def find(self, job_id: int, attempt: int) -> tuple[int, int] | None:
        self.found.append((job_id, attempt))
        return (job_id, attempt) if (job_id, attempt) in self.alive else None

    def ask(self, actor: tuple[int, int]) -> tuple[int, int]:
        self.asked.append(actor)
        return actor  # the "ObjectRef"


@pytest.fixture
def ray(monkeypatch) -> StandInRay:
    return StandInRay(monkeypatch)


def on(card: int) -> dict:
    return {"node_id": "n1", "cards": [card], "gpu_ids": [str(card)]}


def test_an_attempt_launched_here_is_asked_once_and_known_once_it_answers(ray):
    book = Placements()
    book.launched((1, 1), (1, 1))

    assert book.current([(1, 1)]) == {}  # still starting
    ray.answers[(1, 1)] = on(2)
    assert book.current([(1, 1)]) == {(1, 1): Placement("n1", (2,))}
    assert book.current([(1, 1)]) == {(1, 1): Placement("n1", (2,))}
    assert ray.asked == [(1, 1)] and ray.found == []


def test_running_attempts_never_asked_are_found_by_name_and_ended_ones_forgotten(ray):
    """As a restarted dispatcher: the running attempts are looked up once each; one
    whose actor is not listed yet is looked up again on the next tick."""
    book = Placements()
    ray.alive = {(1, 1)}
    ray.answers[(1, 1)] = on(0)

    assert book.current([(1, 1), (2, 1)]) == {(1, 1): Placement("n1", (0,))}
    ray.alive.add((2, 1))
    ray.answers[(2, 1)] = on(1)
    assert book.current([(1, 1), (2, 1)]) == {
        (1, 1): Placement("n1", (0,)),
        (2, 1): Placement("n1", (1,)),
    }
    assert ray.found == [(1, 1), (2, 1), (2, 1)]

    assert book.current([(2, 1)]) == {(2, 1): Placement("n1", (1,))}  # (1, 1) ended
    assert ray.asked.count((1, 1)) == 1
    book.current([(1, 1), (2, 1)])  # forgotten: a running (1, 1) would be asked afresh
    assert ray.asked.count((1, 1)) == 2


def test_an_actor_that_cannot_say_is_left_to_rays_rule_and_not_asked_again(ray):
    book = Placements()
    book.launched((1, 1), None)  # a launch stood in for: no actor to ask
    ray.answers[(2, 1)] = None  # died before answering
    book.launched((2, 1), (2, 1))

    assert book.current([(1, 1), (2, 1)]) == {}
    assert book.current([(1, 1), (2, 1)]) == {}
    assert ray.asked == [(2, 1)] and ray.found == []


def test_an_answer_without_cards_or_node_is_no_placement():
    assert placement_of({"node_id": "n1", "cards": [0, 1]}) == Placement("n1", (0, 1))
    assert placement_of({"node_id": "n1", "cards": None}) is None  # this Ray did not say
    assert placement_of({"node_id": "n1", "cards": []}) is None
    assert placement_of(None) is None
