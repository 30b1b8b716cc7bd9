"""What each stage plans: its jobs (named tuples) and the files it must produce, from the
resolved `Experiment`. A stage is a module of this package, found here (no list names
them): adding an analysis is a module here, its rule file `workflow/rules/{name}.smk` (included
by the Snakefile because it is there), its script and its captions.

A stage module has
- `targets(exp)`: its final files (what `rule all` asks for), none when it plans nothing;
- `AFTER`: the stages whose files it reads (its place in the order: the report's text
  and the targets follow it), or `EVERY` for one that reads every other's files;
- optionally `TABLE`: the stem of the results table it writes (`{results}/{TABLE}.csv`,
  also a page of the report), and `describe(exp)`: what it did, a paragraph of the
  report's landing text ("" when it plans nothing: the text never announces an analysis
  that did not run).
Other modules here (no `targets`) are helpers.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

EVERY = "every stage"  # AFTER of a stage that follows all the others


def in_order(found: dict[str, ModuleType]) -> tuple[ModuleType, ...]:
    """The stage modules `found` ({name: module}), each after the stages it reads
    (AFTER): by level (how many stages precede it), then by name."""
    for module in found.values():
        after = getattr(module, "AFTER", None)
        if after is None:
            raise ImportError(f"{module.__name__} has targets() but no AFTER (the stages it reads)")
        unknown = set(() if after == EVERY else after) - set(found)
        if unknown:
            raise ImportError(f"{module.__name__}.AFTER names no stage: {sorted(unknown)}")
    level: dict[str, int] = {}

    def place(name: str, seen: tuple[str, ...] = ()) -> int:
        """1 + the level of the latest stage it reads (0 for one that reads none)."""
        if name in seen:
            raise ImportError(f"stages read each other: {' -> '.join((*seen, name))}")
        if name not in level:
            after = found[name].AFTER
            before = [n for n in found if found[n].AFTER != EVERY] if after == EVERY else after
            level[name] = 1 + max((place(b, (*seen, name)) for b in before), default=-1)
        return level[name]

    return tuple(found[name] for name in sorted(found, key=lambda n: (place(n), n)))


def _discover() -> tuple[ModuleType, ...]:
    """Every stage module of this package (one with `targets`), in order."""
    found = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if callable(getattr(module, "targets", None)):
            found[info.name] = module
    return in_order(found)


STAGES = _discover()


def name(stage: ModuleType) -> str:
    """A stage's name: its module's (and its rule file's) name."""
    return stage.__name__.rsplit(".", 1)[1]


def targets(exp) -> list[str]:
    """Every stage's final files: the default target."""
    return [path for stage in STAGES for path in stage.targets(exp)]


def planned_tables(exp) -> list[str]:
    """The stems of the results tables this experiment writes: each stage's TABLE where
    it plans anything."""
    return [stage.TABLE for stage in STAGES if getattr(stage, "TABLE", None) and stage.targets(exp)]


def table_names() -> list[str]:
    """Every table a stage may write (the `table` wildcard)."""
    return [stage.TABLE for stage in STAGES if getattr(stage, "TABLE", None)]


def description(exp) -> str:
    """The report's landing text: each stage's paragraph, in stage order."""
    paragraphs = [stage.describe(exp) for stage in STAGES if hasattr(stage, "describe")]
    return "\n\n".join(p.strip() for p in paragraphs if p and p.strip()) + "\n"
