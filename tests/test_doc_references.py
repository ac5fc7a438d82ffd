"""Documentation references resolve: every ``*.md`` a docstring, comment or doc names exists.

Scans ``jaxmu/``, ``tests/``, ``bench/``, ``configs/``, ``docs/`` and ``README.md`` (pure text, no
imports of jaxmu) for references to markdown files, such as ``docs/methods.md §6.2``,
``docs/protocol.md §6.1, §6.3–6.5``, ``docs/architecture.md#layers`` or a bare ``README.md``, and
for the short forms ``protocol §7.1`` / ``methods §2.3``. A reference fails when

* the file it names is not in the repository (paths resolve from the repository root or from
  the referring file's folder; a bare name is no exception, so ``methods.md`` alone fails: name
  the repository path);
* a ``§N`` (or each end of a range ``§N–M``, or each of a list ``§N, §M``) is not the number of a
  heading of the target (``## 6. ...``, ``### 6.2 ...``);
* a ``#anchor`` is not the GitHub anchor of one of the target's headings.

Names of files the code *writes* (``report.md`` of ``jaxmu.report``) are not references. This file
itself is not scanned: its tests plant bad references on purpose.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("jaxmu", "tests", "bench", "configs", "docs", "README.md")
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".cfg"}
SELF = Path(__file__).resolve()
# Outputs of the code, named in its docstrings; not documents of the repository.
GENERATED = {"report.md"}
# Short forms ("protocol §7.1") and the document they mean; None: no such document in the repo.
SHORT_FORMS = {"protocol": "docs/protocol.md", "methods": "docs/methods.md",
               "design": None, "cpu-performance": None}

_PATH = re.compile(r"(?<![\w/.:-])((?:[\w.-]+/)*[\w-][\w.-]*\.md)(?![\w])(#[\w-]+)?")
_SHORT = re.compile(r"(?<![\w/.-])(" + "|".join(map(re.escape, SHORT_FORMS)) + r")(?=\s*§)")
_NUM = r"\d+(?:\.\d+)*"
# What may follow a path before its section list: closing backticks / quotes, then spaces.
_SECTIONS = re.compile(r"[`'\"]*\s*((?:(?:,|and)?\s*§\s*" + _NUM + r"(?:\s*[–-]\s*" + _NUM + r")?)+)")
_ONE = re.compile(r"§\s*(" + _NUM + r")(?:\s*[–-]\s*(" + _NUM + r"))?")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")


def headings(text: str) -> tuple[set[str], set[str]]:
    """(section numbers, GitHub anchors) of a markdown text's headings."""
    numbers, anchors = set(), set()
    in_code = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        m = None if in_code else _HEADING.match(line)
        if not m:
            continue
        title = m.group(1)
        num = re.match(r"(" + _NUM + r")\.?(?:\s|$)", title)
        if num:
            numbers.add(num.group(1))
        anchors.add(anchor(title))
    return numbers, anchors


def anchor(title: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    s = re.sub(r"[^\w\- ]", "", title.strip().lower())
    return s.replace(" ", "-")


def resolve(name: str, referrer: Path, root: Path) -> Path | None:
    """The repository file a reference names, from the root or from the referring file's folder."""
    for base in (root, referrer.parent):
        p = (base / name).resolve()
        if p.is_file() and p.is_relative_to(root):
            return p
    return None


def _sections(rest: str) -> list[str]:
    m = _SECTIONS.match(rest)
    if not m:
        return []
    out = []
    for a, b in _ONE.findall(m.group(1)):
        out.append(a)
        if b:
            # "§2.4-2.5" names 2.4 and 2.5; "§6.3–5" is read as 6.3 and 6.5.
            out.append(b if "." in b or "." not in a else a.rsplit(".", 1)[0] + "." + b)
    return out


def scan_text(text: str, referrer: Path, root: Path = ROOT) -> list[str]:
    """Problems of the references in ``text`` (of the file ``referrer``), as ``file:line: why``."""
    problems: list[str] = []
    cache: dict[Path, tuple[set[str], set[str]]] = {}
    rel = referrer.relative_to(root) if referrer.is_relative_to(root) else referrer

    def check(target_name: str | None, label: str, pos: int, secs: list[str], frag: str | None):
        line = text.count("\n", 0, pos) + 1
        where = f"{rel}:{line}"
        target = resolve(target_name, referrer, root) if target_name else None
        if target is None:
            problems.append(f"{where}: {label!r} names no file of the repository")
            return
        if target.suffix != ".md" or not (secs or frag):
            return
        if target not in cache:
            cache[target] = headings(target.read_text(encoding="utf-8"))
        numbers, anchors = cache[target]
        shown = target.relative_to(root)
        for s in secs:
            if s not in numbers:
                problems.append(f"{where}: {label} §{s}: {shown} has no heading numbered {s}")
        if frag and frag[1:] not in anchors:
            problems.append(f"{where}: {label}{frag}: {shown} has no heading with that anchor")

    for m in _PATH.finditer(text):
        name = m.group(1)
        if Path(name).name in GENERATED:
            continue
        check(name, name, m.start(), _sections(text[m.end():m.end() + 200]), m.group(2))
    for m in _SHORT.finditer(text):
        check(SHORT_FORMS[m.group(1)], m.group(1), m.start(), _sections(text[m.end():m.end() + 200]), None)
    return problems


def scanned_files(root: Path = ROOT) -> list[Path]:
    out = []
    for entry in SCANNED:
        p = root / entry
        files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
        out += [f for f in files if f.suffix in SUFFIXES and f.resolve() != SELF
                and "__pycache__" not in f.parts]
    return out


def scan(root: Path = ROOT) -> list[str]:
    problems = []
    for f in scanned_files(root):
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        problems += scan_text(text, f, root)
    return problems


def test_every_doc_reference_resolves():
    problems = scan()
    assert not problems, "unresolved documentation references:\n" + "\n".join(problems)


def test_the_scan_sees_the_references():
    # Guards against a scanner that silently matches nothing.
    files = scanned_files()
    assert any(f.name == "fisher.py" for f in files)
    text = (ROOT / "jaxmu" / "methods" / "fisher.py").read_text(encoding="utf-8")
    assert _PATH.search(text).group(1) == "docs/methods.md"
    assert _sections(" §4.8 step 4") == ["4.8"]
    assert _sections("`` §2.4-2.5: x") == ["2.4", "2.5"]
    assert _sections(" §6.1, §6.3–6.5, §7.1 (x)") == ["6.1", "6.3", "6.5", "7.1"]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text(
        "# Guide\n\n## 1. Start\n\n### 1.2 Details here\n\n```\n## 9. not a heading\n```\n"
        "## Plain heading: with punctuation\n", encoding="utf-8")
    (tmp_path / "pkg").mkdir()
    return tmp_path


def _problems(repo: Path, line: str) -> list[str]:
    f = repo / "pkg" / "mod.py"
    f.write_text(f'"""Doc.\n\n{line}\n"""\n', encoding="utf-8")
    return scan_text(f.read_text(encoding="utf-8"), f, repo)


@pytest.mark.parametrize("line", [
    "See ``docs/guide.md`` §1.2 and docs/guide.md §1.",
    "See docs/guide.md, §1 only (the comma is not a section list) and [the guide](../docs/guide.md).",
    "See docs/guide.md#plain-heading-with-punctuation and docs/guide.md#12-details-here.",
    "Output: ``report.md`` under the run directory; digests use hashlib.md5.",
])
def test_good_references_pass(repo: Path, line: str):
    assert _problems(repo, line) == []


@pytest.mark.parametrize("line, why", [
    ("See docs/missing.md §1.", "names no file"),
    ("See ``guide.md`` §1.", "names no file"),                       # bare name: not a repo path
    ("See shared/spec/methods.md §2.", "names no file"),
    ("See ``docs/guide.md`` §1.3 for details.", "no heading numbered 1.3"),
    ("See docs/guide.md §1, §9.", "no heading numbered 9"),             # code blocks are not headings
    ("See docs/guide.md §1.2-1.4.", "no heading numbered 1.4"),
    ("See docs/guide.md#no-such-heading.", "no heading with that anchor"),
    ("As in design §11.", "names no file"),
])
def test_bad_references_fail(repo: Path, line: str, why: str):
    problems = _problems(repo, line)
    assert len(problems) == 1 and why in problems[0], problems
    assert problems[0].startswith("pkg/mod.py:3:"), problems


def test_every_name_in_the_api_reference_exists():
    """docs/api.md: each name in the first column of its tables resolves in the section's module."""
    import re

    bases = {"The front door": "jaxmu", "Methods": "jaxmu.methods", "Models and data": "jaxmu",
             "Scores": "jaxmu", "Configuration": "jaxmu.config"}
    base, checked, missing = None, 0, []
    for line in (ROOT / "docs" / "api.md").read_text().splitlines():
        if line.startswith("## "):
            base = next(v for k, v in bases.items() if line[3:].startswith(k))
        if not (line.startswith("| ") and base) or line.startswith("| name") or line.startswith("|---"):
            continue
        prefix = ""
        for token in re.findall(r"`([^`]+)`", line.split(" | ")[0]):
            path = re.sub(r"\(.*", "", token).lstrip("@").strip().removeprefix("jaxmu.")
            if not re.fullmatch(r"[A-Za-z_][\w.]*", path):
                continue  # prose such as an entry-point group
            if "." in path and path.split(".")[0].islower():
                prefix = path.rsplit(".", 1)[0] + "."  # `models.register(...)`, `model_names()`: same module
            elif prefix:
                path = prefix + path
            if _resolve(base, path) is None:
                missing.append(f"{base}: {token}")
            checked += 1
    assert not missing, f"docs/api.md names what does not exist: {missing}"
    assert checked > 40


def _resolve(base: str, dotted: str):
    """The object ``base.dotted`` names, importing submodules on the way; None if it does not exist."""
    import importlib

    obj, mod = importlib.import_module(base), base
    for part in dotted.split("."):
        if hasattr(obj, part):
            obj = getattr(obj, part)
        else:
            try:
                obj = importlib.import_module(f"{mod}.{part}")
            except ImportError:
                return None
        mod = f"{mod}.{part}"
    return obj
