"""Where each running GPU attempt's cards are, as its actor says: the dispatcher's
input to its card model (server/gpu_cards.py).

The dispatcher asks each attempt's actor once (``devices``: its node id and
the card indices Ray allocated to it) and keeps the pending answer; each tick
collects the answers that arrived, without waiting, and forgets the attempts
that ended. So a tick costs no round trip per running job: one ``ray.wait``
over the answers still outstanding, if any. An attempt this dispatcher
launched is asked at launch; one it did not (a restarted dispatcher adopting
running jobs) is looked up by name once and asked then, so the book rebuilds
itself from the live actors. Until an answer comes (the actor is still
starting, or pending in Ray), the card model places the attempt by Ray's own
rule.

Why ask the actor rather than another source:

* Ray's state API (``list_actors``) gives an actor's node but not its cards,
  and needs the dashboard, which the local head does not run;
* the worker could report its cards to the API, into the database: that is a
  migration, and a report path every worker (and a benchmark's stand-in)
  must take before the dispatcher's model is right, while the actor already
  knows, and dies with the attempt, so its answer is never stale;
* the dispatcher's own prediction (``GpuCards.take``) is exact on one node but
  only a guess of the node across several, and lost on a restart.

Nothing here survives a restart, and nothing needs to: the actors answer again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from server.gpu_cards import Placement
from workers import ray_actor

AttemptKey = tuple[int, int]  # (job id, attempt number)


class Placements:
    def __init__(self) -> None:
        self._asked: dict[AttemptKey, Any] = {}  # the devices() answer still to come
        self._known: dict[AttemptKey, Placement | None] = {}  # None: no usable answer

    def launched(self, key: AttemptKey, actor: Any) -> None:
        """Ask the actor just launched for ``key`` where it runs (answered once it
        starts). Without an actor (a launch stood in for) there is nobody to ask."""
        ref = ray_actor.ask_devices(actor) if actor is not None else None
        if ref is None:
            self._known[key] = None
        else:
            self._asked[key] = ref

    def current(self, running: Iterable[AttemptKey]) -> dict[AttemptKey, Placement]:
        """The placements known of the ``running`` attempts; the others are
        forgotten, and those never asked are asked now."""
        live = set(running)
        self._asked = {key: ref for key, ref in self._asked.items() if key in live}
        self._known = {key: seen for key, seen in self._known.items() if key in live}
        for key in live - self._asked.keys() - self._known.keys():
            actor = ray_actor.find(*key)
            if actor is not None:  # not listed yet, or gone: the reconcile decides
                self.launched(key, actor)
        by_ref = {ref: key for key, ref in self._asked.items()}
        for ref in ray_actor.answered(list(by_ref)):
            key = by_ref[ref]
            del self._asked[key]
            self._known[key] = placement_of(ray_actor.answer(ref))
        return {key: seen for key, seen in self._known.items() if seen is not None}


def placement_of(devices: Mapping[str, Any] | None) -> Placement | None:
    """An actor's ``devices()`` answer as a placement; None if it says no cards."""
    if not devices or not devices.get("node_id") or not devices.get("cards"):
        return None
    return Placement(str(devices["node_id"]), tuple(int(card) for card in devices["cards"]))
