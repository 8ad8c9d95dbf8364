"""`repro report`: the published results as one static site under paper_tables/, and the README's
results section, both generated from the committed run records and tables.

    report = build_report(root, results_dir, tables_dir)          # writes the site and README section
    report.problems                                               # link and count checks (empty: ok)

Pages: `index.html` (every paper of the roster `paper_tables/index.yaml`, reproduced or not, with
verdict counts and headline effects), `summary.html` (the popular summary, sentence by sentence),
`<slug>/index.html` (comparison table, figures, arms with their configs and sources, runs with
their records, code commits). A package whose claimed.yaml appears is picked up on the next run.
Browser checks (headless Chromium, when installed) are repro.report.browser.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from repro.report.check import check_counts, check_links, site_pages
from repro.report.collect import PaperReport, collect
from repro.report.html import write_site
from repro.report.readme import results_section, sync_results


@dataclass
class Report:
    papers: list[PaperReport]
    pages: list[Path]
    readme_changed: bool
    problems: list[str] = field(default_factory=list)


def build_report(
    root: Path, results_dir: Path, tables_dir: Path, site_dir: Path | None = None, readme: Path | None = None
) -> Report:
    """Collect, write the site into `site_dir` (default `tables_dir`) and the results section of
    `readme` (default `<root>/README.md`), then run the link and count checks."""
    site_dir = Path(site_dir or tables_dir)
    readme = Path(readme or Path(root) / "README.md")
    papers = collect(Path(root), Path(results_dir), Path(tables_dir))
    pages = write_site(papers, site_dir)
    changed = sync_results(readme, results_section(papers, readme.parent, site_dir))
    problems = check_links(site_dir) + check_counts(site_dir, Path(tables_dir))
    return Report(papers, pages, changed, problems)


__all__ = ["Report", "build_report", "check_counts", "check_links", "collect", "site_pages"]
