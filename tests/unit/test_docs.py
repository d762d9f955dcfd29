"""The documentation cannot drift from the code: docs/configuration.md is the output of
``gateway settings-doc``, every GATEWAY_* variable the code reads is in it, every relative
link and file named in README.md and docs/ exists, and the README stays a short page whose
two commands are the ones .ci/run runs."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

from gateway.__main__ import build_parser

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CONFIGURATION = ROOT / "docs" / "configuration.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 250

VARIABLE_RE = re.compile(r"\bGATEWAY_[A-Z0-9_]*[A-Z0-9]\b")
FENCE_RE = re.compile(r"^```.*?^```", re.M | re.S)
CODE_SPAN_RE = re.compile(r"`[^`\n]+`")
LINK_RE = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
REPO_PATH_RE = re.compile(r"^(?:gateway|tests|bench|grafana|docs|\.ci)/[\w./-]*$")


def prose(text: str) -> str:
    """Markdown without fenced blocks and code spans (links there are not links)."""
    return CODE_SPAN_RE.sub("", FENCE_RE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE_RE.sub("", page.read_text()).splitlines():
        if m := re.match(r"#{1,6} (.+)", line):
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


# -- (a) docs/configuration.md is `gateway settings-doc` -------------------------------------


def test_configuration_page_is_the_settings_doc_output() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "settings-doc"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    assert proc.stdout == CONFIGURATION.read_text(), (
        "docs/configuration.md is out of date: run `gateway settings-doc > docs/configuration.md`"
    )


# -- (b) every GATEWAY_* variable the code reads is documented -------------------------------


def variables_in(path: Path) -> set[str]:
    """GATEWAY_* names in a file; in Python only those in strings and comments (an
    identifier such as proxy.headers.GATEWAY_SET is no environment variable)."""
    text = path.read_text()
    if path.suffix != ".py":
        return set(VARIABLE_RE.findall(text))
    found = set()
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type in (tokenize.STRING, tokenize.COMMENT):
            found.update(VARIABLE_RE.findall(tok.string))
    return found


def code_files() -> list[Path]:
    files = [p for p in (ROOT / "gateway").rglob("*") if p.suffix in (".py", ".sql")]
    return [*files, ROOT / "Dockerfile", ROOT / "compose.yaml", ROOT / ".ci" / "run"]


def test_every_variable_the_code_reads_is_documented() -> None:
    documented = set(re.findall(r"`(GATEWAY_[A-Z0-9_]+)`", CONFIGURATION.read_text()))
    missing = {
        f"{name} ({path.relative_to(ROOT)})"
        for path in code_files()
        for name in variables_in(path)
        if name not in documented
    }
    assert not missing, f"undocumented in docs/configuration.md: {sorted(missing)}"


def test_the_scan_finds_variables_and_skips_identifiers() -> None:
    found = set().union(*(variables_in(p) for p in code_files()))
    assert "GATEWAY_EMBEDDED_DATABASE" in found  # the Dockerfile sets it
    assert "GATEWAY_ENCRYPTION_KEYS" in found  # compose.yaml and the code
    assert "GATEWAY_SET" not in found  # gateway/proxy/headers.py: a Python name


# -- (c) relative links and named files exist ------------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files_and_headings(page: Path) -> None:
    broken = []
    for target in LINK_RE.findall(prose(page.read_text())):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, broken


def exists(name: str) -> bool:
    return (ROOT / name).exists()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_files_named_in_code_spans_exist(page: Path) -> None:
    named = {
        span.strip("`")
        for span in CODE_SPAN_RE.findall(FENCE_RE.sub("", page.read_text()))
        if REPO_PATH_RE.match(span.strip("`"))
    }
    missing = [n for n in sorted(named) if not exists(n)]
    assert not missing, f"{page.name} names files that do not exist: {missing}"


# -- (d) and (e): the README ----------------------------------------------------------------


def test_readme_is_short() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail to docs/"


def quick_start_commands() -> list[str]:
    section = README.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [b.strip() for b in re.findall(r"^```sh\n(.*?)^```", section, re.M | re.S)]


def steps(command: str) -> list[str]:
    return [s.strip() for s in command.split("&&")]


def ci_steps() -> list[str]:
    """The commands of .ci/run, as a newcomer would type them (PYTHON defaults to python3;
    -q only quiets pip)."""
    text = (ROOT / ".ci" / "run").read_text()
    assert 'PYTHON="${PYTHON:-python3}"' in text
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip() if line.lstrip().startswith("#") else line.strip()
        line = line.replace('"$PYTHON"', "python3").replace(" -q ", " ")
        out.extend(steps(line))
    return [s for s in out if s]


def test_readme_commands_are_what_ci_runs() -> None:
    serve, test = quick_start_commands()  # exactly these two, in this order
    ci = ci_steps()
    positions = [ci.index(s) if s in ci else -1 for s in steps(test)]
    assert -1 not in positions and positions == sorted(positions), (steps(test), ci)
    # The serve command sets up the same virtualenv the same way, then installs and serves.
    assert steps(serve)[:2] == steps(test)[:2]
    assert steps(serve)[2:] == ["pip install -e .", "gateway serve"]
    assert build_parser().parse_args(["serve"]).command == "serve"
