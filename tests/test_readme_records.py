"""The README's figures are the records' (docs/records/*.json), and the commands it gives exist.

The declarations are in ``tests/readme_figures.py``, the mechanism in ``tests/readme_check.py``.
"""

import re

import pytest

from tests import readme_figures
from tests.readme_check import (
    COVERED,
    FENCE,
    INLINE_CODE,
    NUMBER,
    README,
    RECORDS,
    ROOT,
    check,
    normalize,
    read_readme,
    record,
)
from tests.readme_figures import DECLARATIONS


def test_every_published_figure_is_its_record():
    assert check(read_readme(), DECLARATIONS) == []


@pytest.mark.parametrize(
    "old, new",
    [
        # a cell of a table (Fine-tuning after compression)
        ("| 3.00x | 32.4 | 84.9 | 2.0 | 860 | 3.7 |", "| 3.00x | 32.4 | 85.0 | 2.0 | 860 | 3.7 |"),
        # a measured figure in prose (Deployment)
        (
            "runs 4.98x faster than the float32 original",
            "runs 4.99x faster than the float32 original",
        ),
        # a setting in a covered section
        ("(defaults 0.25 for fp32,", "(defaults 0.3 for fp32,"),
        # a derived figure (Results)
        ("The last 800 steps add 0.7 points", "The last 800 steps add 0.8 points"),
        # a figure outside the covered sections
        ("from 82.3% to 61.9% PCKh", "from 82.3% to 62.9% PCKh"),
        # a number added to a covered section
        ("well below 100% (occluded,", "well below 100% (12% occluded,"),
    ],
)
def test_an_edited_figure_fails(old, new):
    readme = read_readme()
    assert readme.count(old) == 1
    assert check(readme.replace(old, new), DECLARATIONS) != []


def _covered_numbers(readme: str) -> list[re.Match]:
    """The numbers of the covered sections that are figures (not in code), in the raw text."""
    blank = FENCE.sub(lambda m: " " * len(m.group()), readme)
    blank = INLINE_CODE.sub(lambda m: " " * len(m.group()), blank)
    headings = [m.start() for m in re.finditer(r"^## ", blank, flags=re.M)] + [len(blank)]
    numbers = []
    for start, end in zip(headings, headings[1:]):
        if blank[start:end].splitlines()[0].strip() in COVERED:
            numbers += [m for m in NUMBER.finditer(blank, start, end)]
    return numbers


def _edited(number: str) -> str:
    """``number`` with its last digit changed."""
    return number[:-1] + str((int(number[-1]) + 1) % 10)


def test_editing_any_number_of_the_covered_sections_fails():
    readme = read_readme()
    numbers = _covered_numbers(readme)
    assert len(numbers) > 500  # every table of Results and Deployment, and their prose
    unnoticed = []
    for m in numbers:
        edited = readme[: m.start()] + _edited(m.group()) + readme[m.end() :]
        if not check(edited, DECLARATIONS):
            unnoticed.append(f"{m.group()!r} at ...{readme[m.start() - 40 : m.end() + 20]!r}...")
    assert unnoticed == []


def test_every_record_is_written_by_a_script_and_every_cited_record_exists():
    scripts = {
        path: path.read_text()
        for folder in ("benchmarks", "examples")
        for path in (ROOT / folder).glob("*.py")
    }
    for path in RECORDS.glob("*.json"):
        names = (f"records/{path.name}", f'"records" / "{path.name}"')
        writers = [p.name for p, text in scripts.items() if any(name in text for name in names)]
        assert writers, f"no script in benchmarks/ or examples/ writes {path}"
    for doc in [README, *(ROOT / "docs").glob("*.md")]:
        for cited in re.findall(r"docs/records/[\w.-]+\.json", doc.read_text()):
            assert (ROOT / cited).is_file(), f"{doc.name} cites {cited}, which does not exist"


def test_the_docs_tables_are_the_records():
    deployment = normalize((ROOT / "docs" / "deployment.md").read_text())
    for table in readme_figures.bench_export_tables():
        assert normalize("\n".join(table)) in deployment
    for row in readme_figures.int8_settings_rows():
        assert row in deployment
    tensor_ring = normalize((ROOT / "docs" / "tensor_ring.md").read_text())
    assert normalize("\n".join(readme_figures.tensor_ring_table())) in tensor_ring
    tucker = next(
        c for c in record("models")["paper"]["conversions"] if c["method"] == "tucker"
    )  # ranks 4,4,3,2,64,64,3,3, the design document's example
    assert tucker["ranks"] == [4, 4, 3, 2, 64, 64, 3, 3]
    example = (
        f"so {tucker['tensor_params']:,} parameters for W "
        f"({record('models')['paper']['tensor_params'] / tucker['tensor_params']:.2f}x on the "
        f"tensor alone) and {tucker['params']:,} for the whole network "
        f"({tucker['compression_ratio']:.2f}x)."
    )
    assert example in normalize((ROOT / "docs" / "design.md").read_text())


def _script_commands(text: str) -> list[tuple[str, list[str]]]:
    """``python benchmarks/X.py --option ...`` and ``python examples/X.py ...`` in ``text``:
    the script and the options given, from code blocks and inline code alike."""
    text = text.replace("\\\n", " ")
    prose = normalize(FENCE.sub(" ", text))
    sources = [*INLINE_CODE.findall(prose), *text.splitlines()]
    commands = []
    for source in sources:
        for m in re.finditer(r"python ((?:benchmarks|examples)/\w+\.py)([^`#]*)", source):
            commands.append((m.group(1), re.findall(r"(?<![\w-])(--[a-z][\w-]*)", m.group(2))))
    return commands


def test_every_script_command_of_the_readme_exists_with_its_options():
    commands = _script_commands(read_readme())
    assert len(commands) > 10
    for script, options in commands:
        path = ROOT / script
        assert path.is_file(), f"the README runs {script}, which does not exist"
        source = path.read_text()
        for option in options:
            assert f'"{option}"' in source, f"{script} has no option {option}"
