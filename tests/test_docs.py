"""The user docs stay navigable: README.md is a front page of at most 220 lines, and every relative link in README.md,
docs/*.md and benchmarks/RESULTS.md points at a file that exists and, with a #fragment, at a heading of that file
(GitHub's anchors). External http(s) links are not checked: the tests run offline."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "RESULTS.md"]
README_MAX_LINES = 220

FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1", re.S)
# [text](target) and ![alt](target); the target may carry a "title"; nested brackets in the text are rare enough
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.M)


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: markdown and punctuation dropped, lower case, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = text.replace("`", "").replace("*", "").replace("~", "")
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # \w keeps letters and digits of any script, and _
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor; repeated headings get -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    for match in HEADING.finditer(FENCE.sub("", page.read_text())):
        slug = github_slug(match.group(2))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(page: Path) -> list[str]:
    text = CODE_SPAN.sub("", FENCE.sub("", page.read_text()))
    return [m.group(1) for m in LINK.finditer(text)]


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:: not checked
            continue
        path_part, _, fragment = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            shown = dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest.name
            broken.append(f"{target} (no heading with anchor #{fragment} in {shown})")
    return broken


def test_github_slug_matches_githubs_anchors():
    assert github_slug("Ctrl-C, kill -9, and what a resumed run is") == "ctrl-c-kill--9-and-what-a-resumed-run-is"
    assert github_slug("8. The default pipeline: `make pipeline`") == "8-the-default-pipeline-make-pipeline"
    assert github_slug("RewardAdapter vs TRL's reward-model path") == "rewardadapter-vs-trls-reward-model-path"
    assert github_slug("SFT (or your SFT model) -> RL") == "sft-or-your-sft-model---rl"
    assert github_slug("4 × the budget: `trl-ext convert-gguf`") == "4--the-budget-trl-ext-convert-gguf"


def test_the_checker_finds_a_broken_link_and_a_broken_anchor(tmp_path):
    (tmp_path / "b.md").write_text("# Real heading\n\n```\n# not a heading\n```\n")
    page = tmp_path / "a.md"
    page.write_text(
        "[ok](b.md) [ok](b.md#real-heading) [ok](#top) [web](https://example.com/x.md)\n"
        "`[in code](missing.md)`\n\n# Top\n\n"
        "[gone](missing.md) [bad anchor](b.md#not-a-heading) ![img](fig.png)\n"
    )
    assert broken_links(page) == [
        "missing.md (no such file)",
        "b.md#not-a-heading (no heading with anchor #not-a-heading in b.md)",
        "fig.png (no such file)",
    ]


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move the detail to a page in docs/ and link it"
    )


def test_the_readme_names_the_test_command():
    # .ci/run runs `make test` because the README says that is how to run the tests
    assert "make test" in (ROOT / "README.md").read_text()
    assert "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_resolves(page):
    assert page.exists(), f"{page.relative_to(ROOT)} is missing"
    broken = broken_links(page)
    assert not broken, f"{page.relative_to(ROOT)} has broken links: {broken}"
