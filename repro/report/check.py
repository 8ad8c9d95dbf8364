"""Checks of a built site that need no browser (they run everywhere, CI included).

    problems = check_links(site_dir)                 # every href/src resolves; anchors exist;
                                                     # images have alt text; tables have headers
    problems = check_counts(site_dir, tables_dir)    # index counts == each comparison.md's counts

Each returns a list of one-line problems (empty: all good). Links to http(s) and mailto are not
followed (the site itself loads nothing from the network: `check_links` also flags any
http(s) stylesheet, script or image).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

from repro.report.collect import comparison_counts
from repro.report.html import INDEX


class _Page(HTMLParser):
    """Collects links, ids, images and tables of one page, and the index's count cells."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []  # (tag, url)
        self.ids: set[str] = set()
        self.images_without_alt: list[str] = []
        self.tables = 0
        self.tables_with_headers = 0
        self._in_table_has_th: list[bool] = []
        self.counts: dict[tuple[str, str], Counter] = defaultdict(Counter)  # (paper, scale) -> verdicts
        self.not_reproduced: set[str] = set()
        self._row: tuple[str, str] | None = None
        self._verdict: str | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and "href" in a:
            self.links.append((tag, a["href"]))
        if tag in ("img", "script", "link", "iframe", "source") and ("src" in a or "href" in a):
            self.links.append((tag, a.get("src") or a.get("href", "")))
        if tag == "img" and not a.get("alt", "").strip():
            self.images_without_alt.append(a.get("src", "?"))
        if tag == "table":
            self.tables += 1
            self._in_table_has_th.append(False)
        if tag == "th" and self._in_table_has_th and a.get("scope") in ("col", "row"):
            self._in_table_has_th[-1] = True
        if tag == "tr" and "data-paper" in a:
            if a.get("data-status") == "not-reproduced":
                self.not_reproduced.add(a["data-paper"])
            self._row = (a["data-paper"], a.get("data-scale", ""))
        if tag == "td" and self._row and "data-verdict" in a:
            self._verdict, self._text = a["data-verdict"], ""

    def handle_data(self, data: str) -> None:
        if self._verdict is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._verdict is not None and self._row is not None:
            n = int(self._text.strip() or 0)
            if n:
                self.counts[self._row][self._verdict] += n
            else:
                self.counts[self._row]  # the row exists even when every count is 0
            self._verdict = None
        if tag == "tr":
            self._row = None
        if tag == "table" and self._in_table_has_th:
            self.tables_with_headers += self._in_table_has_th.pop()


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(Path(path).read_text())
    return page


def site_pages(site_dir: Path) -> list[Path]:
    """The site's HTML pages: the index, the summary page and one page per paper."""
    site_dir = Path(site_dir)
    return sorted([*site_dir.glob("*.html"), *site_dir.glob("*/index.html")])


def check_links(site_dir: Path) -> list[str]:
    """Every relative href/src of every page resolves to a file (and its #anchor to an id there);
    nothing is loaded from the network; every image has alt text; every table has headers."""
    problems = []
    parsed = {p.resolve(): parse(p) for p in site_pages(site_dir)}
    if not parsed:
        return [f"{site_dir}: no pages"]
    for path, page in parsed.items():
        where = path.relative_to(Path(site_dir).resolve())
        for tag, url in page.links:
            parts = urlsplit(url)
            if parts.scheme in ("http", "https", "mailto"):
                if tag != "a":
                    problems.append(f"{where}: <{tag}> loads {url} from the network")
                continue
            if parts.scheme or parts.netloc:
                problems.append(f"{where}: unexpected link {url}")
                continue
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if not target.is_file():
                problems.append(f"{where}: <{tag}> {url} does not resolve ({target} is missing)")
                continue
            if parts.fragment and target.suffix == ".html":
                ids = (parsed.get(target) or parse(target)).ids
                if unquote(parts.fragment) not in ids:
                    problems.append(f"{where}: {url}: no element with id {parts.fragment!r} in {target.name}")
        problems += [f"{where}: image without alt text: {src}" for src in page.images_without_alt]
        if page.tables_with_headers != page.tables:
            n = page.tables - page.tables_with_headers
            problems.append(f"{where}: {n} table(s) without scoped headers")
    return problems


def index_counts(site_dir: Path) -> tuple[dict[tuple[str, str], Counter], set[str]]:
    """((paper, scale) -> verdict -> count, papers marked not reproduced) as the index shows them."""
    page = parse(Path(site_dir) / INDEX)
    return {k: +v for k, v in page.counts.items()}, page.not_reproduced


def check_counts(site_dir: Path, tables_dir: Path) -> list[str]:
    """The index's verdict counts equal those each comparison.md states, scale by scale (a paper's
    table that is stale against its records shows up here); a paper whose table has no scale
    with runs must be marked not reproduced."""
    shown, not_reproduced = index_counts(site_dir)
    problems = []
    for md in sorted(Path(tables_dir).glob("*/comparison.md")):
        slug = md.parent.name
        stated = {s: +c for s, c in comparison_counts(md.read_text()).items() if s != "—"}
        on_index = {scale: c for (paper, scale), c in shown.items() if paper == slug}
        if not stated and slug not in not_reproduced:
            problems.append(f"{slug}: its table has no runs but the index does not mark it not reproduced")
        for scale in sorted(set(stated) | set(on_index)):
            if stated.get(scale) != on_index.get(scale):
                problems.append(
                    f"{slug} at {scale}: index shows {dict(on_index.get(scale, {}))}, "
                    f"{md} states {dict(stated.get(scale, {}))} (stale table? run `repro tables {slug}`)"
                )
    return problems
