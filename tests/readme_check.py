"""How the README's figures are checked against the records they come from.

Each published figure is declared in :mod:`tests.readme_figures` as one of:

- :class:`Table`: a whole Markdown table, rendered from its record; the README must hold it line
  for line (after collapsing whitespace).
- :class:`Figure`: a phrase of the README with ``{}`` where each measured value stands, and a
  function of the records giving those values, formatted as the README prints them.
- :class:`Settings`: a phrase whose numbers are not measurements (settings, step counts, sizes
  of data sets, ratios that are targets, published figures of others); it is held literally.

:func:`check` returns every problem: a declared phrase or table the README does not hold, and, in
the sections that must be covered completely (:data:`COVERED`), every number that no declaration
holds. Numbers in fenced code blocks and in inline code (commands, options, paths) are not figures.
So editing any number of a covered section, or any measured value anywhere, makes the check fail.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RECORDS = ROOT / "docs" / "records"
#: Records that are not in docs/records: the bundled model's training record ships with it.
OTHER_RECORDS = {"bundled-training": ROOT / "tcompress" / "assets" / "hourglass-synthetic.json"}
#: README sections (level-2 headings, with their subsections) in which every number is declared.
COVERED = ("## Results", "## Deployment: ONNX")

#: A number: digits with thousands commas or a decimal point, an exponent; not part of a word
#: (fp16, U6, hg8) nor a size written NxM (3x3, 256x256).
NUMBER = re.compile(r"(?<![\w.,])\d+(?:[.,]\d+)*(?:e[-+]?\d+)?(?!\d|x\d)")
INLINE_CODE = re.compile(r"`[^`]*`")
FENCE = re.compile(r"^```.*?^```[^\n]*$", re.S | re.M)


@cache
def record(name: str) -> dict:
    """The record ``docs/records/<name>.json`` (or one of :data:`OTHER_RECORDS`)."""
    path = OTHER_RECORDS.get(name, RECORDS / f"{name}.json")
    with open(path) as f:
        return json.load(f)


@dataclass(frozen=True)
class Table:
    section: str
    render: Callable[[], Iterable[str]]  # the table's lines

    def texts(self) -> list[str]:
        return ["\n".join(self.render())]


@dataclass(frozen=True)
class Figure:
    section: str
    text: str  # README text, "{}" where each measured value goes
    values: Callable[[], tuple | str]

    def texts(self) -> list[str]:
        values = self.values()
        values = (values,) if isinstance(values, str) else tuple(values)
        if self.text.count("{}") != len(values):
            raise AssertionError(f"{self.text!r}: {len(values)} values for its slots")
        return [self.text.format(*values)]


@dataclass(frozen=True)
class Settings:
    section: str
    text: str  # held literally: its numbers are not measurements

    def texts(self) -> list[str]:
        return [self.text]


def normalize(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def split_sections(readme: str) -> dict[str, str]:
    """Level-2 heading -> its text (subsections included), fenced code blocks blanked."""
    readme = FENCE.sub(" ", readme)
    parts = re.split(r"^(## .*)$", readme, flags=re.M)
    return {parts[i].strip(): normalize(parts[i + 1]) for i in range(1, len(parts) - 1, 2)}


def section_of(sections: dict[str, str], heading: str) -> tuple[str, int, int]:
    """The level-2 section holding ``heading`` (a level-2 heading, or the start of a level-3 one)
    and the range of its text that ``heading`` spans (up to the next heading of its level)."""
    if heading in sections:
        return heading, 0, len(sections[heading])
    for name, text in sections.items():
        start = text.find(heading)
        if start >= 0:
            end = text.find("### ", start + len(heading))
            return name, start, len(text) if end < 0 else end
    raise KeyError(heading)


def occurrences(text: str, snippet: str, start: int = 0, end: int | None = None) -> list:
    """The (start, end) spans of ``snippet`` in ``text[start:end]``, in ``text``'s offsets."""
    end = len(text) if end is None else end
    spans, at = [], text.find(snippet, start, end)
    while at >= 0:
        spans.append((at, at + len(snippet)))
        at = text.find(snippet, at + 1, end)
    return spans


def uncovered_numbers(text: str, spans: list[tuple[int, int]]) -> list[str]:
    """The numbers of ``text`` outside ``spans`` and outside inline code, with some context."""
    code = [m.span() for m in INLINE_CODE.finditer(text)]
    out = []
    for m in NUMBER.finditer(text):
        a, b = m.span()
        if any(s <= a and b <= e for s, e in (*spans, *code)):
            continue
        out.append(f"{m.group()!r} in ...{text[max(0, a - 50) : b + 30]}...")
    return out


def check(readme: str, declarations: Iterable, covered: Iterable[str] = COVERED) -> list[str]:
    """Every problem of ``readme`` against ``declarations`` (see the module's docstring)."""
    sections = split_sections(readme)
    problems = []
    spans: dict[str, list[tuple[int, int]]] = {name: [] for name in sections}
    for declaration in declarations:
        try:
            name, start, end = section_of(sections, declaration.section)
        except KeyError:
            problems.append(f"no README section {declaration.section!r}")
            continue
        try:
            snippets = declaration.texts()
        except Exception as e:  # a record without the entry, a claim the record contradicts
            problems.append(f"{declaration.section}: {type(e).__name__}: {e}")
            continue
        for snippet in snippets:
            found = occurrences(sections[name], normalize(snippet), start, end)
            if not found:
                problems.append(f"{declaration.section}: the README does not say {snippet!r}")
            spans[name] += found
    for name in covered:
        if name not in sections:
            problems.append(f"no README section {name!r}")
            continue
        for number in uncovered_numbers(sections[name], spans[name]):
            problems.append(f"{name}: no record or setting declares {number}")
    return problems


def read_readme() -> str:
    return README.read_text(encoding="utf-8")
