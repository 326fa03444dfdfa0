"""Every model, data set and pruning method a job can name, built in or plug-in.

One registry shape serves the three families (open_lth's idea): a mapping from a
name to an entry, and one ``get`` that fails listing the names it knows. An entry
is an ``importlib.metadata.EntryPoint`` (``module:attr``) and where it comes
from, so nothing is imported until a job uses it. The built-ins are declared
below, in code, rather than read from this project's installed metadata, which
an editable install can leave stale. Plug-ins are the entry points of installed
distributions in the groups ``silo.models``, ``silo.datasets`` and
``silo.pruning``.

Listing and checking names reads only the distributions' metadata: neither
torch nor a plug-in's code is imported, so the API server and the CLI check a
spec without either. What a process found is kept for its life (a package
installed later needs a restart, as any import would); ``refresh`` rereads.

Two rules keep the meaning of a name independent of what else is installed:

- A plug-in may not replace a built-in: a job naming ``resnet20`` gets the
  built-in whatever is installed. The plug-in's entry is ignored, with a warning
  naming its distribution.
- Two plug-ins declaring one name make that name unusable: a spec naming it is
  refused with both distributions named, instead of one of them winning by the
  order of ``sys.path``.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

log = logging.getLogger("silo.plugins")

# What a name may look like: it travels through YAML, URLs and table columns.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class UnknownNameError(ValueError):
    """A name no built-in and no installed plug-in provides (or two plug-ins do)."""


class PluginError(RuntimeError):
    """A plug-in failed to import or to do its work; the message names it."""


@dataclass(frozen=True)
class Origin:
    """Where an entry comes from: built in, or a distribution and its version."""

    distribution: str | None = None
    version: str | None = None

    @property
    def builtin(self) -> bool:
        return self.distribution is None

    def describe(self) -> str:
        return "built in" if self.builtin else f"{self.distribution} {self.version}"

    def as_dict(self) -> dict[str, str]:
        if self.builtin:
            return {"source": "builtin"}
        return {
            "source": "plugin",
            "distribution": str(self.distribution),
            "version": str(self.version),
        }


BUILTIN = Origin()


@dataclass(frozen=True)
class Entry:
    """One name of one family: how to load it and where it comes from."""

    kind: str
    entry_point: EntryPoint
    origin: Origin

    @property
    def name(self) -> str:
        return self.entry_point.name

    def describe(self) -> str:
        if self.origin.builtin:
            return f"built-in {self.kind} {self.name!r}"
        return (
            f"plug-in {self.kind} {self.name!r} (entry point {self.name} = "
            f"{self.entry_point.value} in group {self.entry_point.group}, "
            f"distribution {self.origin.describe()})"
        )

    @contextlib.contextmanager
    def blamed(self, doing: str) -> Iterator[None]:
        """Turn a plug-in's exception into a :class:`PluginError` naming the plug-in
        and what it was doing (the original stays chained, so its traceback is
        logged). A built-in's errors pass unchanged: their messages already say
        what is wrong with the spec."""
        if self.origin.builtin:
            yield
            return
        try:
            yield
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(
                f"{self.describe()} failed to {doing}: {type(exc).__name__}: {exc}"
            ) from exc

    def load(self) -> Any:
        """The implementation (imported now, the first time)."""
        with self.blamed("import"):
            return self.entry_point.load()


@dataclass(frozen=True)
class _Found:
    entries: Mapping[str, Entry]
    ambiguous: Mapping[str, tuple[Origin, ...]]


class Registry:
    """The names of one family: the built-ins and the installed plug-ins of ``group``."""

    def __init__(self, kind: str, group: str, builtins: Mapping[str, str]) -> None:
        self.kind = kind
        self.group = group
        self._builtins = {
            name: Entry(kind, EntryPoint(name, target, group), BUILTIN)
            for name, target in builtins.items()
        }
        self._found: _Found | None = None

    def refresh(self) -> None:
        """Forget what was found; the next use reads the installed metadata again."""
        self._found = None

    def entries(self) -> Mapping[str, Entry]:
        """Every usable entry by name, sorted by name."""
        return self._discover().entries

    def names(self) -> tuple[str, ...]:
        return tuple(self.entries())

    def get(self, name: str) -> Entry:
        """The entry called ``name``; :class:`UnknownNameError` lists the names known."""
        found = self._discover()
        entry = found.entries.get(name)
        if entry is not None:
            return entry
        if name in found.ambiguous:
            providers = " and ".join(origin.describe() for origin in found.ambiguous[name])
            raise UnknownNameError(
                f"{self.kind} {name!r} is declared by two plug-ins ({providers}); "
                "uninstall one of them"
            )
        raise UnknownNameError(f"unknown {self.kind} {name!r}; allowed: {', '.join(found.entries)}")

    def _discover(self) -> _Found:
        found = self._found
        if found is None:
            # Computed without a lock: two threads racing here find the same thing.
            found = self._found = self._read_plugins()
        return found

    def _read_plugins(self) -> _Found:
        declared: dict[str, list[Entry]] = {}
        for entry_point in entry_points(group=self.group):
            dist = entry_point.dist
            origin = Origin(
                dist.name if dist else "unknown distribution", dist.version if dist else "?"
            )
            entry = Entry(self.kind, entry_point, origin)
            if not _NAME.fullmatch(entry_point.name):
                log.warning("ignored %s: its name is not a usable name", entry.describe())
                continue
            declared.setdefault(entry_point.name, []).append(entry)
        entries = dict(self._builtins)
        ambiguous: dict[str, tuple[Origin, ...]] = {}
        for name, candidates in declared.items():
            origins = tuple(sorted({c.origin for c in candidates}, key=Origin.describe))
            if name in self._builtins:
                log.warning(
                    "ignored the %s %r of %s: a plug-in may not replace a built-in",
                    self.kind,
                    name,
                    " and ".join(o.describe() for o in origins),
                )
            elif len(candidates) > 1:
                log.warning(
                    "the %s %r is declared by %s; jobs naming it are refused",
                    self.kind,
                    name,
                    " and ".join(o.describe() for o in origins),
                )
                ambiguous[name] = origins
            else:
                entries[name] = candidates[0]
        return _Found(dict(sorted(entries.items())), ambiguous)


MODELS = Registry(
    "model",
    "silo.models",
    {
        "lenet5": "silo_core.models.small:build_lenet5",
        "mlp": "silo_core.models.small:build_mlp",
        "resnet18": "silo_core.models.torchvision_models:build_resnet18",
        "resnet20": "silo_core.models.cifar_resnet:build_resnet20",
        "resnet32": "silo_core.models.cifar_resnet:build_resnet32",
        "resnet50": "silo_core.models.torchvision_models:build_resnet50",
        "resnet56": "silo_core.models.cifar_resnet:build_resnet56",
        "vgg11": "silo_core.models.cifar_vgg:build_vgg11",
        "vgg16": "silo_core.models.cifar_vgg:build_vgg16",
        "vgg19": "silo_core.models.cifar_vgg:build_vgg19",
        "vit_b_16": "silo_core.models.torchvision_models:build_vit_b_16",
    },
)
DATASETS = Registry(
    "dataset",
    "silo.datasets",
    {
        "cifar10": "silo_core.data.cifar:load_cifar10",
        "cifar100": "silo_core.data.cifar:load_cifar100",
        "digits": "silo_core.data.digits:load_digits_splits",
        "imagefolder": "silo_core.data.imagefolder:load_imagefolder_splits",
        "synthetic": "silo_core.data.synthetic:load_synthetic_splits",
    },
)
PRUNING_METHODS = Registry(
    "pruning method",
    "silo.pruning",
    {
        "global_magnitude": "silo_core.pruning.masks:prune_global_magnitude",
        "layerwise_magnitude": "silo_core.pruning.masks:prune_layerwise_magnitude",
        "random": "silo_core.pruning.masks:prune_random",
    },
)
REGISTRIES: dict[str, Registry] = {
    "models": MODELS,
    "datasets": DATASETS,
    "pruning_methods": PRUNING_METHODS,
}


def refresh() -> None:
    """Reread every family's plug-ins (after a test puts a distribution on the path)."""
    for registry in REGISTRIES.values():
        registry.refresh()
