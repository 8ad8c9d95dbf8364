"""`repro report` on a copy of the committed records, tables and packages: every link and image
resolves, the index's counts equal the tables', every paper of the roster is listed (the ones
without runs marked so), a new package is picked up, the committed site and the README's results
section are what the records give; in headless Chromium (when installed) every page renders with
no console error, no failed load and no sideways scrolling at phone width."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from repro.report import build_report, check_counts, check_links, site_pages
from repro.report.browser import find_chromium, render
from repro.report.check import index_counts
from repro.report.collect import comparison_counts, load_roster
from repro.report.readme import BEGIN, END

REPO = Path(__file__).resolve().parents[2]
COPIED = ("paper_tables", "results", "experiments", "README.md")


def copy_checkout(dest: Path) -> Path:
    """The parts of the checkout the report reads (and writes), copied to `dest`."""
    for name in COPIED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("adhoc", "__pycache__"))
        else:
            shutil.copy(src, dest / name)
    return dest


def build(root: Path):
    return build_report(root, root / "results", root / "paper_tables")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    root = copy_checkout(tmp_path_factory.mktemp("checkout"))
    return root, build(root)


def test_links_and_counts_check_out(site):
    root, report = site
    assert report.problems == []
    pages = {p.relative_to(root / "paper_tables").as_posix() for p in site_pages(root / "paper_tables")}
    with_claims = {p.parent.name for p in (REPO / "paper_tables").glob("*/claimed.yaml")}
    assert pages == {"index.html", "summary.html", *(f"{slug}/index.html" for slug in with_claims)}


def test_index_lists_every_paper_and_marks_those_without_runs(site):
    root, _ = site
    roster = [e.slug for e in load_roster(REPO / "paper_tables")]
    assert len(roster) == 5
    html = (root / "paper_tables" / "index.html").read_text()
    listed = re.findall(r'<tr data-paper="([a-z0-9_]+)"', html)
    assert list(dict.fromkeys(listed)) == roster  # roster order, each paper once (or once per scale)
    with_runs = {p.name for p in (REPO / "results").iterdir() if any(p.glob("*/*/seed*.json"))}
    _, not_reproduced = index_counts(root / "paper_tables")
    assert not_reproduced == set(roster) - with_runs


def test_a_paper_without_runs_is_listed_and_marked_not_reproduced(tmp_path):
    """Every committed package has runs now: take one's records away in a copy and rebuild. The one
    taken is practitioner_recipe: its drift claims pool every package's runs (`papers: all`), so
    removing another package's records would change its verdicts (the report flags that as a stale
    table), which is not what this test is about."""
    root = copy_checkout(tmp_path)
    shutil.rmtree(root / "results" / "practitioner_recipe")
    (root / "paper_tables" / "practitioner_recipe" / "comparison.md").unlink()
    report = build(root)
    _, not_reproduced = index_counts(root / "paper_tables")
    assert not_reproduced == {"practitioner_recipe"}
    html = (root / "paper_tables" / "index.html").read_text()
    assert '<tr data-paper="practitioner_recipe"' in html and report.problems == []


def test_index_counts_equal_each_comparison_table(site):
    root, _ = site
    shown, _ = index_counts(root / "paper_tables")
    for md in sorted((REPO / "paper_tables").glob("*/comparison.md")):
        for scale, tally in comparison_counts(md.read_text()).items():
            if scale != "—":
                assert shown[(md.parent.name, scale)] == +tally, (md.parent.name, scale)
    clipping = comparison_counts((REPO / "paper_tables/clipping_bottleneck/comparison.md").read_text())
    assert sum(clipping["micro"].values()) == sum(shown[("clipping_bottleneck", "micro")].values()) > 0


def test_every_figure_has_alt_text_and_every_claim_row_an_anchor(site):
    root, report = site
    for paper in report.papers:
        if paper.comparison is None:
            continue
        page = (root / "paper_tables" / paper.slug / "index.html").read_text()
        figures = re.findall(r"^!\[[^\]]*\]\((fig_[^)]+\.png)\)", paper.comparison.read_text(), re.M)
        for name in figures:
            alt = re.search(rf'<img src="{re.escape(name)}" alt="([^"]+)"', page)
            assert alt and len(alt.group(1)) > 40, name  # a sentence, not a file name
        for scale, rows in paper.evaluated.results.items():
            if scale == "—":
                continue
            for r in rows:
                assert f'id="claim-{scale}-{r.claim.id}"' in page


def test_summary_page_links_each_summary_claim_to_its_rows(site):
    root, report = site
    html = (root / "paper_tables" / "summary.html").read_text()
    for paper in report.papers:
        if paper.evaluated is None:
            assert "Not yet reproduced" in html.split(f">{paper.title}<", 1)[1].split("<h2>", 1)[0]
            continue
        for claim in paper.evaluated.paper.claims:
            if claim.summary is not None:
                assert f"<code>{claim.id}</code>" in html
                # Linked to its row where the paper's page has its comparison table.
                assert (f'href="{paper.slug}/index.html#claim-' in html) == (paper.comparison is not None)
        for s in paper.evaluated.paper.summary_only:
            assert s.value.replace("'", "&#x27;").replace('"', "&quot;") in html


def test_committed_site_and_readme_section_are_current(site):
    """Regenerating from the committed records changes nothing (run `repro report` and commit)."""
    root, report = site
    for page in report.pages:
        rel = page.relative_to(root)
        assert (REPO / rel).exists(), f"{rel} is not committed"
        assert page.read_text() == (REPO / rel).read_text(), f"{rel} is stale: run `repro report`"
    ours = (root / "README.md").read_text()
    block = ours[ours.index(BEGIN) : ours.index(END)]
    assert block in (REPO / "README.md").read_text()


def test_checks_catch_broken_images_missing_anchors_and_stale_counts(tmp_path):
    root = copy_checkout(tmp_path)
    assert build(root).problems == []
    tables = root / "paper_tables"
    # A figure that is gone, an image without alt text, a link to a claim row that does not exist.
    fig = next((tables / "clipping_bottleneck").glob("fig_*.png"))
    fig.unlink()
    page = tables / "states_not_tokens" / "index.html"
    text = page.read_text()
    text = re.sub(r'alt="[^"]+"', 'alt=""', text, count=1)
    page.write_text(text.replace('href="../index.html"', 'href="../index.html#claim-micro-nope"', 1))
    problems = "\n".join(check_links(tables))
    assert f"{fig.name} does not resolve" in problems
    assert "image without alt text" in problems and "no element with id 'claim-micro-nope'" in problems
    # A table whose counts disagree with its records (stale), found by comparing with the index.
    md = tables / "states_not_tokens" / "comparison.md"
    text = md.read_text()
    # Move one claim from the first verdict of the micro counts line to the second (the totals
    # still add up, the counts no longer match the records).
    line = re.search(r"^\d+ claims: \d+ paper claims \(([^)]*)\)", text, re.M)
    assert line is not None, "no counts line in the committed table"
    (n1, v1), (n2, v2) = [(int(n), v) for n, v in re.findall(r"(\d+) ([a-z ]+)", line.group(1))[:2]]
    moved = line.group(0).replace(f"({n1} {v1}, {n2} {v2}", f"({n1 - 1} {v1}, {n2 + 1} {v2}", 1)
    assert moved != line.group(0)
    md.write_text(text.replace(line.group(0), moved, 1))
    stale = check_counts(tables, tables)
    assert len(stale) == 1 and stale[0].startswith("states_not_tokens at micro")


def test_comparison_counts_sum_the_roles_of_a_counts_line():
    by_role = (
        "## Claims at scale `micro`\n\n13 claims: 7 paper claims (6 underpowered, 1 not reproduced); "
        "4 summary claims (2 underpowered, 2 inconclusive); 2 preconditions (2 reproduced).\n"
    )
    assert comparison_counts(by_role) == {
        "micro": Counter({"underpowered": 8, "inconclusive": 2, "not reproduced": 1, "reproduced": 2})
    }
    older = "## Claims at scale `micro`\n\n3 claims: 2 reproduced, 1 inconclusive.\n"
    assert comparison_counts(older) == {"micro": Counter({"reproduced": 2, "inconclusive": 1})}


def test_a_new_package_is_picked_up(tmp_path):
    root = copy_checkout(tmp_path)
    tables, results = root / "paper_tables", root / "results"
    (tables / "newpaper").mkdir()
    (tables / "newpaper" / "claimed.yaml").write_text(
        'paper: "A New Paper (Doe)"\narxiv: "2699.00001"\narms: [a]\nclaims:\n'
        "  - {id: trains, text: Training helps., claimed: '+1', source: Table 1, headline: true,\n"
        "     measure: {kind: change, metric: eval/id/greedy_acc, arm: a, direction: 1, min_effect: 0.01}}\n"
    )
    for seed, final in ((1, 0.50), (2, 0.51), (3, 0.52)):
        rec = json.loads((REPO / "results/clipping_bottleneck/micro/grpo/seed1.json").read_text())
        rec.update(paper="newpaper", arm="a", seed=seed, run_id=f"{seed}" * 32)
        rec["curves"]["eval/id/greedy_acc"] = [[0, 0.3], [30, final]]
        rec["final"]["eval/id/greedy_acc"] = final
        path = results / "newpaper" / "micro" / "a" / f"seed{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rec))
    from repro.tables import write_tables

    write_tables("newpaper", results, tables)
    report = build(root)
    assert report.problems == []
    assert [p.slug for p in report.papers][-1] == "newpaper"  # after the roster
    shown, not_reproduced = index_counts(tables)
    assert shown[("newpaper", "micro")] == Counter({"reproduced": 1}) and "newpaper" not in not_reproduced
    page = (tables / "newpaper" / "index.html").read_text()
    assert "A New Paper (Doe)" in page and "seed2.json" in page
    assert "`trains` (micro)" in (root / "README.md").read_text()


def test_building_twice_writes_identical_files(tmp_path):
    root = copy_checkout(tmp_path)
    first = {p: p.read_bytes() for p in build(root).pages}
    second = build(root)
    assert {p: p.read_bytes() for p in second.pages} == first and not second.readme_changed


CHROMIUM = find_chromium()


@pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install chromium)"
)
def test_pages_render_in_headless_chromium(site, tmp_path):
    root, _ = site
    tables = root / "paper_tables"
    results = render(site_pages(tables), CHROMIUM, screenshots=tmp_path / "shots")
    assert len(results) == len(site_pages(tables))
    for r in results:
        assert r.ok, r.problems()
        assert r.title.endswith("· repro")
        assert r.screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (index,) = [r for r in results if r.path == tables / "index.html"]
    shown = Counter()
    for paper, scale, verdict, n in index.counts:
        shown[(paper, scale, verdict)] += n
    for md in sorted(tables.glob("*/comparison.md")):
        for scale, tally in comparison_counts(md.read_text()).items():
            for verdict, n in tally.items():
                if scale != "—":
                    assert shown[(md.parent.name, scale, verdict)] == n
    pages_with_figures = [r for r in results if r.path.parent.name == "states_not_tokens"]
    assert pages_with_figures and pages_with_figures[0].images >= 5  # and none broken (r.ok above)
