"""Re-sync cost of an unchanged 100-page website: time, HTTP requests and embedder calls.

Usage: python bench/web_sync.py [--pages 100] [--repeat 3] [--keep]
A site of N pages (two sections each, public SQuAD paragraphs, with navigation, a cookie banner
and a footer around them) and a sitemap is served from a thread on loopback (so this process
sets WEB_ALLOW_PRIVATE_ADDRESSES). In a throw-away database (bench_web_sync), in one run:
- cold: the first sync of the sitemap (fetch, extract, embed, index in this process): the
  baseline the re-syncs are compared with;
- unchanged, 304: the server answers the pages' ETags with 304 Not Modified;
- unchanged, no validators: the server ignores them and the markup changes (a build time in the
  footer) but the text does not: every page is fetched and extracted, none embedded;
- one page changed: the same as above with one page's text edited.
Times are the median of --repeat runs. Prints JSON and writes bench/results/web_sync.json.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from knowledge_db import ROOT, bench_database  # noqa: E402

RESULT = ROOT / "bench" / "results" / "web_sync.json"


def main() -> None:
    """Run the benchmark and print its JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "squad-dev-public"))
    parser.add_argument("--pages", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    # The site is served on loopback by this process; the default refuses such addresses.
    os.environ["WEB_ALLOW_PRIVATE_ADDRESSES"] = "1"
    os.environ["EMBEDDER"] = "tests.retrieval.test_web.CountingMiniLM"
    drop = bench_database("bench_web_sync")
    try:
        figures = run(Path(args.data), args.pages, args.repeat)
        RESULT.write_text(json.dumps(figures, indent=2) + "\n")
        print(json.dumps(figures, indent=2))
    finally:
        if not args.keep:
            drop()


def _page(title: str, sections: list[tuple[str, str]], stamp: str) -> bytes:
    body = "".join(
        f'<h2 id="s{i}">{html.escape(heading)}</h2>\n<p>{html.escape(text)}</p>\n'
        for i, (heading, text) in enumerate(sections)
    )
    return (
        f"<!doctype html><html><head><title>{html.escape(title)} | Help</title></head><body>"
        '<nav><a href="/">Home</a> <a href="/shop">Shop</a> <a href="/contact">Contact</a></nav>'
        '<div id="cookie-banner">We use cookies. Accept all cookies to continue.</div>'
        f"<main><article><h1>{html.escape(title)}</h1>{body}</article></main>"
        f"<footer>Copyright 2026 Example Ltd. Page built {stamp}.</footer></body></html>"
    ).encode()


def run(data: Path, n_pages: int, repeat: int) -> dict:
    """Serve the site, sync it cold, then re-sync it unchanged and with one change."""
    from retrieval.models import Chunk, KnowledgeDocument
    from retrieval.web_tasks import web_source_add, web_source_sync
    from tests.retrieval.test_web import CountingMiniLM, Route, SiteServer

    passages = [json.loads(line) for line in (data / "passages.jsonl").open()]
    load_start = round(os.getloadavg()[0], 1)
    site = SiteServer()
    try:

        def publish(stamp: str, *, validators: bool, changed: int | None = None) -> None:
            paths = []
            for i in range(n_pages):
                a, b = passages[i % len(passages)], passages[(i * 7 + 31) % len(passages)]
                text_b = b["text"] + (f" Revised {stamp}." if i == changed else "")
                page = _page(
                    f"Article {i}: {a['title']}",
                    [(f"About {a['title']}", a["text"]), (f"See also {b['title']}", text_b)],
                    stamp,
                )
                site.routes[f"/help/{i}"] = Route(page, validators=validators)
                paths.append(f"/help/{i}")
            locs = "".join(f"<url><loc>{site.url(p)}</loc></url>" for p in paths)
            site.routes["/sitemap.xml"] = Route(
                (
                    '<?xml version="1.0" encoding="UTF-8"?><urlset '
                    f'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{locs}</urlset>'
                ).encode(),
                content_type="application/xml",
                validators=False,
            )

        def measure(label: str) -> dict:
            CountingMiniLM.calls = 0
            before = sum(site.hits.values())
            started = time.perf_counter()
            report = web_source_sync(source=source, inline=True)
            seconds = time.perf_counter() - started
            assert not report.errors, report.errors[:3]
            return {
                "label": label,
                "seconds": seconds,
                "http_requests": sum(site.hits.values()) - before,
                "embedder_calls": CountingMiniLM.calls,
                "outcomes": report.counts,
            }

        publish("2026-11-26T10:00", validators=True)
        source = web_source_add(url=site.url("/sitemap.xml"))
        # Load the model before timing anything (a running worker has it loaded).
        from retrieval.embedders import get_embedder

        get_embedder().embed(["warm up"])
        cold = measure("cold")
        runs: dict[str, list[dict]] = {"unchanged_304": [], "unchanged_no_validators": []}
        for r in range(repeat):
            runs["unchanged_304"].append(measure("unchanged_304"))
            publish(f"2026-11-26T11:{r:02d}", validators=False)
            runs["unchanged_no_validators"].append(measure("unchanged_no_validators"))
            publish("2026-11-26T10:00", validators=True)
            # Re-prime the ETags (the no-validator run stored none).
            measure("reprime")
        publish("2026-11-26T12:00", validators=False, changed=3)
        one_changed = measure("one_page_changed")
        documents = KnowledgeDocument.objects.filter(status="ready").count()
        figures = {
            # Times scale with the machine's load (2 cores shared): recorded beside them.
            "load_average_1min": {"start": load_start, "end": round(os.getloadavg()[0], 1)},
            "pages": n_pages,
            "documents_ready": documents,
            "chunks": Chunk.objects.count(),
            "repeat": repeat,
            "cold": _round(cold),
            "one_page_changed": _round(one_changed),
        }
        for name, rows in runs.items():
            figures[name] = {
                "seconds_median": round(statistics.median(r["seconds"] for r in rows), 3),
                "seconds_per_page": round(
                    statistics.median(r["seconds"] for r in rows) / n_pages, 4
                ),
                "http_requests": rows[-1]["http_requests"],
                "embedder_calls": max(r["embedder_calls"] for r in rows),
                "outcomes": rows[-1]["outcomes"],
                "share_of_cold_time": round(
                    statistics.median(r["seconds"] for r in rows) / cold["seconds"], 4
                ),
            }
        return figures
    finally:
        site.stop()


def _round(row: dict) -> dict:
    return {**row, "seconds": round(row["seconds"], 3)}


if __name__ == "__main__":
    main()
