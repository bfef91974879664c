"""Web sources against a real HTTP server on loopback (a thread): fetched with limits, extracted,
indexed with the real embedder, re-synced (unchanged, changed, vanished), cited with anchors."""

from __future__ import annotations

import gzip
import hashlib
import html
import io
import os
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.management import CommandError, call_command
from django.utils import timezone
from django_tasks import TaskResultStatus
from django_tasks_db.models import DBTaskResult

from retrieval.embedders import MiniLMEmbedder
from retrieval.models import CacheEntry, Chunk, KnowledgeDocument, WebPage, WebSource
from retrieval.search import Passage
from retrieval.web import (
    Extractor,
    Fetcher,
    WebRefused,
    WebUnavailable,
    address_allowed,
    citation_url,
    page_extract,
    passages_linked,
)
from retrieval.web_tasks import web_source_add, web_source_sync, web_sync_ensure, web_sync_task
from tests.retrieval.files import pdf_with_text


@dataclass
class Route:
    """What the server answers on a path (a new Route object changes the page)."""

    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "text/html; charset=utf-8"
    validators: bool = True  # send an ETag and answer If-None-Match with 304
    delay: float = 0.0


class SiteServer:
    """A small website on 127.0.0.1 in a thread; counts the requests and the 304s per path."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: dict[str, int] = {}
        self.arrivals: list[tuple[str, float]] = []  # (path, time.monotonic()) per request
        self.not_modified = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                with server.lock:
                    server.hits[self.path] = server.hits.get(self.path, 0) + 1
                    server.arrivals.append((self.path, time.monotonic()))
                    route = server.routes.get(self.path)
                if route is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if route.delay:
                    time.sleep(route.delay)
                etag = '"' + hashlib.sha1(route.body).hexdigest() + '"'
                if route.validators and self.headers.get("If-None-Match") == etag:
                    with server.lock:
                        server.not_modified += 1
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
                self.send_response(route.status)
                if route.status == 200:
                    self.send_header("Content-Type", route.content_type)
                    if route.validators:
                        self.send_header("ETag", etag)
                for name, value in route.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                try:
                    self.wfile.write(route.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def gaps(self) -> list[tuple[str, float]]:
        """Each request after the first: its path and the seconds since the one before."""
        return [
            (path, at - before)
            for (_, before), (path, at) in zip(self.arrivals, self.arrivals[1:], strict=False)
        ]

    def sitemap(self, paths: Sequence[str]) -> Route:
        """A sitemap (urlset) listing these paths of this server."""
        locs = "".join(f"<url><loc>{html.escape(self.url(path))}</loc></url>" for path in paths)
        return Route(
            '<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
            f"{locs}</urlset>".encode(),
            content_type="application/xml",
        )

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        """The address of a path on this server."""
        return f"http://{host}:{self.port}{path}"

    def stop(self) -> None:
        """Shut the server down."""
        self.httpd.shutdown()
        self.httpd.server_close()


def article(title: str, sections: dict[tuple[str, str], str], *, footer: str = "") -> bytes:
    """A help-centre page: navigation, a cookie banner and a footer around the article."""
    body = "".join(
        f'<h2 id="{anchor}">{heading}</h2>\n<p>{text}</p>\n'
        for (heading, anchor), text in sections.items()
    )
    return f"""<!doctype html><html><head><title>{title} | Acme Help</title></head><body>
<nav><a href="/">Home</a> <a href="/shop">Shop the spring collection</a></nav>
<div id="cookie-banner" class="cookie-consent">We use cookies to improve your experience.
Accept all cookies to continue browsing our site.</div>
<main><article><h1>{title}</h1>
<p>This article explains the {title.lower()} of Acme Outdoor for orders placed online.</p>
{body}</article></main>
<footer>Copyright 2026 Acme Outdoor Ltd. All rights reserved. {footer}</footer>
</body></html>""".encode()


RETURNS = article(
    "Returns policy",
    {
        ("How to return an item", "how-to-return"): (
            "Print the prepaid label from your account page, pack the item and drop it at any "
            "post office. Refunds arrive within five working days after we receive the parcel."
        ),
        ("Items that cannot be returned", "exceptions"): (
            "Gift cards, perishable food and personalised items cannot be returned. Opened "
            "software can be exchanged for the same title only."
        ),
    },
)


class CountingMiniLM(MiniLMEmbedder):
    """The real MiniLM embedder, counting its embedding calls (what a re-sync must not spend)."""

    calls = 0

    def embed(self, texts: Any) -> Any:
        type(self).calls += 1
        return super().embed(texts)


@pytest.fixture
def site() -> Any:
    server = SiteServer()
    yield server
    server.stop()


@pytest.fixture
def web_settings(settings: Any) -> Any:
    """Loopback is allowed here only because the test server lives there (the default refuses)."""
    settings.WEB_ALLOW_PRIVATE_ADDRESSES = True
    settings.WEB_TIMEOUT_SECONDS = 30.0  # the machine running the tests may be busy
    settings.WEB_RETIRE_AFTER_FAILURES = 2
    settings.EMBEDDER = "tests.retrieval.test_web.CountingMiniLM"
    return settings


# --- The fetcher's limits (no database) ---------------------------------------------------


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("93.184.216.34", True),
        ("2606:4700::6810:84e5", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
    ],
)
def test_only_public_addresses_are_allowed(address: str, allowed: bool) -> None:
    assert address_allowed(address) is allowed


def test_loopback_is_refused_by_default_before_any_request(site: SiteServer, settings: Any) -> None:
    settings.WEB_ALLOW_PRIVATE_ADDRESSES = False
    site.routes["/page"] = Route(RETURNS)
    for host in ("127.0.0.1", "localhost"):
        with Fetcher.for_url(site.url("/page", host)) as fetcher:
            with pytest.raises(WebRefused, match="WEB_ALLOW_PRIVATE_ADDRESSES"):
                fetcher.get(site.url("/page", host))
    assert site.hits == {}  # not even robots.txt was asked for


def test_a_name_with_any_private_address_is_refused(
    site: SiteServer, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A resolver answering one public and one private address (a rebinding set-up): refused,
    # since the connection could otherwise land on either.
    settings.WEB_ALLOW_PRIVATE_ADDRESSES = False
    real = socket.getaddrinfo

    def answer(host: str, *args: Any, **kwargs: Any) -> list:
        if host == "help.example.test":
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", site.port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", site.port)),
            ]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", answer)
    url = f"http://help.example.test:{site.port}/page"
    with Fetcher.for_url(url) as fetcher, pytest.raises(WebRefused, match="127.0.0.1"):
        fetcher.get(url)
    assert site.hits == {}


def test_the_connection_goes_to_the_checked_address_with_the_real_host(
    site: SiteServer, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The name is resolved once, by the fetcher: a second lookup (what a DNS-rebinding attacker
    # would answer differently) would fail this test.
    settings.WEB_ALLOW_PRIVATE_ADDRESSES = True
    site.routes["/page"] = Route(RETURNS)
    real, lookups = socket.getaddrinfo, []

    def answer(host: str, *args: Any, **kwargs: Any) -> list:
        if host == "help.example.test":
            lookups.append(host)
            if len(lookups) > 2:  # robots.txt and the page: one lookup each
                raise socket.gaierror("rebinding attempt")
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", site.port))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", answer)
    url = f"http://help.example.test:{site.port}/page"
    with Fetcher.for_url(url) as fetcher:
        fetched = fetcher.get(url)
    assert fetched.status == 200 and b"Returns policy" in fetched.body
    assert lookups == ["help.example.test", "help.example.test"]


def test_redirects_are_bounded_loops_refused_and_each_target_checked(
    site: SiteServer, web_settings: Any
) -> None:
    site.routes["/a"] = Route(status=302, headers={"Location": "/b"})
    site.routes["/b"] = Route(status=301, headers={"Location": site.url("/a")})
    with Fetcher.for_url(site.url("/a")) as fetcher:
        with pytest.raises(WebRefused, match="redirect loop"):
            fetcher.get(site.url("/a"))
    for i in range(8):
        site.routes[f"/hop{i}"] = Route(status=307, headers={"Location": f"/hop{i + 1}"})
    site.routes["/hop8"] = Route(RETURNS)
    with Fetcher.for_url(site.url("/hop0")) as fetcher:
        with pytest.raises(WebRefused, match="WEB_MAX_REDIRECTS"):
            fetcher.get(site.url("/hop0"))
    assert "/hop6" not in site.hits
    # Off-site target (another host name for the same server): refused, not followed.
    site.routes["/away"] = Route(status=302, headers={"Location": site.url("/page", "localhost")})
    with Fetcher.for_url(site.url("/away")) as fetcher:
        with pytest.raises(WebRefused, match="not this source's site"):
            fetcher.get(site.url("/away"))


def test_a_huge_page_and_a_compression_bomb_are_refused(
    site: SiteServer, web_settings: Any
) -> None:
    web_settings.WEB_MAX_BYTES = 200_000
    site.routes["/huge"] = Route(b"<p>" + b"x" * 1_000_000 + b"</p>")
    # No Content-Length to trust: only counting the body as it arrives finds it.
    site.routes["/bomb"] = Route(
        gzip.compress(b"<p>" + b"a" * 50_000_000, compresslevel=9),
        headers={"Content-Encoding": "gzip"},
    )
    with Fetcher.for_url(site.url("/huge")) as fetcher:
        with pytest.raises(WebRefused, match="bytes"):
            fetcher.get(site.url("/huge"))
        with pytest.raises(WebRefused, match="WEB_MAX_BYTES"):
            fetcher.get(site.url("/bomb"))
        # The same as a gzipped file (a sitemap.xml.gz) rather than a content encoding.
        site.routes["/sitemap.xml.gz"] = Route(
            site.routes["/bomb"].body, content_type="application/gzip"
        )
        with pytest.raises(WebRefused, match="unpacks to over"):
            fetcher.get(site.url("/sitemap.xml.gz"))
        site.routes["/small.gz"] = Route(
            gzip.compress(RETURNS), headers={"Content-Encoding": "gzip"}
        )
        assert fetcher.get(site.url("/small.gz")).body == RETURNS


def test_a_slow_page_times_out(site: SiteServer, web_settings: Any) -> None:
    web_settings.WEB_TIMEOUT_SECONDS = 0.5
    site.routes["/slow"] = Route(RETURNS, delay=2.0)
    with Fetcher.for_url(site.url("/slow")) as fetcher:
        with pytest.raises(WebUnavailable, match="timed out"):
            fetcher.get(site.url("/slow"))


def test_main_content_is_extracted_with_headings_and_anchors() -> None:
    page = page_extract(html=RETURNS, url="https://help.acme.test/returns")
    assert page.title == "Returns policy"
    assert "## How to return an item" in page.text
    assert "prepaid label" in page.text
    for boilerplate in ("cookies", "Copyright", "spring collection"):
        assert boilerplate not in page.text
    assert page.anchors["How to return an item"] == "how-to-return"
    assert (
        citation_url(
            url="https://help.acme.test/returns",
            anchors=page.anchors,
            heading="Items that cannot be returned",
        )
        == "https://help.acme.test/returns#exceptions"
    )
    assert citation_url(url="https://x.test/a", anchors=page.anchors, heading="") == (
        "https://x.test/a"
    )


def test_extraction_runs_in_a_child_that_is_replaced_after_a_timeout_or_crash() -> None:
    with Extractor(timeout=60) as extractor:
        assert extractor.extract(html=RETURNS, url="https://help.acme.test/r") == page_extract(
            html=RETURNS, url="https://help.acme.test/r"
        )
        first = extractor._child.pid
        # A page that takes far longer than the limit: a small page can be extracted before a
        # 0.1 ms wait even starts when this process is descheduled for a moment.
        long_page = (
            b"<html><body><article><h2>Returns</h2>"
            + b"<p>Returns are free within 30 days of delivery, with the prepaid label.</p>" * 20000
            + b"</article></body></html>"
        )
        extractor.timeout = 0.01
        with pytest.raises(WebRefused, match="longer than"):
            extractor.extract(html=long_page, url="https://help.acme.test/r")
        extractor.timeout = 60
        assert extractor.extract(html=RETURNS, url="https://help.acme.test/r").title
        assert extractor._child.pid != first
        extractor._child.kill()  # a crash between pages
        extractor._child.wait()
        assert extractor.extract(html=RETURNS, url="https://help.acme.test/r").title
        with pytest.raises(WebRefused, match="no main content"):
            extractor.extract(html=b"<html><body></body></html>", url="https://help.acme.test/e")


# --- Sync into documents (real database and embedder) --------------------------------------

db = pytest.mark.django_db(transaction=True)


def _document(url: str) -> KnowledgeDocument | None:
    return KnowledgeDocument.objects.filter(web_page__url=url).first()


def _cache_entry_citing(document: KnowledgeDocument) -> CacheEntry:
    return CacheEntry.objects.create(
        question="How do I return an item?",
        embedding=[0.05] * 384,
        answer="Print the prepaid label [1].",
        sources=[{"n": 1, "document_id": document.id, "document_version": document.version}],
        document_versions={str(document.id): document.version},
    )


@db
def test_a_page_is_indexed_then_resynced_unchanged_changed_and_vanished(
    site: SiteServer, web_settings: Any
) -> None:
    site.routes["/returns"] = Route(RETURNS)
    source = web_source_add(url=site.url("/returns"))
    report = web_source_sync(source=source, inline=True)
    assert report.counts == {"changed": 1}, report.errors
    source.refresh_from_db()
    assert source.kind == WebSource.Kind.PAGE
    document = _document(site.url("/returns"))
    assert document.status == KnowledgeDocument.Status.READY
    assert document.title == "Returns policy"
    chunks = list(Chunk.objects.filter(document=document))
    assert any(c.heading == "How to return an item" for c in chunks)
    assert not any("cookies" in c.text or "Copyright" in c.text for c in chunks)
    entry = _cache_entry_citing(document)

    # Unchanged, with validators: a conditional request answered 304; nothing embedded.
    CountingMiniLM.calls = 0
    report = web_source_sync(source=source, inline=True)
    assert report.counts == {"unchanged": 1}
    assert site.not_modified == 1 and report.requests == 2  # robots.txt, then the page
    # Unchanged text in new markup, no validators: fetched and extracted, but not re-indexed.
    site.routes["/returns"] = Route(
        RETURNS.replace(b"reserved.", b"reserved. Page built 2026-11-26 10:42."), validators=False
    )
    assert web_source_sync(source=source, inline=True).counts == {"unchanged": 1}
    assert CountingMiniLM.calls == 0
    document.refresh_from_db()
    assert document.version == 1
    entry.refresh_from_db()
    assert entry.active

    # Changed: a new version is indexed and the cached answer citing the old one retired.
    site.routes["/returns"] = Route(RETURNS.replace(b"five working days", b"ten working days"))
    assert web_source_sync(source=source, inline=True).counts == {"changed": 1}
    assert CountingMiniLM.calls > 0
    document.refresh_from_db()
    assert document.version == 2 and document.status == KnowledgeDocument.Status.READY
    assert "ten working days" in document.content
    entry.refresh_from_db()
    assert not entry.active and entry.retired_reason == "document_changed"

    # Vanished: 404 retires the page at once; its document is no longer searched.
    del site.routes["/returns"]
    assert web_source_sync(source=source, inline=True).counts == {"retired": 1}
    page = WebPage.objects.get(url=site.url("/returns"))
    assert page.state == WebPage.State.RETIRED and "404" in page.error
    assert not KnowledgeDocument.objects.filter(id=document.id).exists()
    assert not Chunk.objects.filter(document_id=document.id).exists()

    # Back again: indexed as a new document.
    site.routes["/returns"] = Route(RETURNS)
    assert web_source_sync(source=source, inline=True).counts == {"changed": 1}
    assert _document(site.url("/returns")).status == KnowledgeDocument.Status.READY


@db
def test_a_pdf_in_a_sitemap_is_indexed_like_an_uploaded_one_and_cited_at_its_address(
    site: SiteServer, web_settings: Any
) -> None:
    manual = pdf_with_text(
        ["Tent warranty", "Every tent carries a two year warranty against seam failure."],
        title="Tent warranty",
    )
    site.routes["/guides/warranty.pdf"] = Route(manual, content_type="application/pdf")
    # A server that calls it a byte stream: the PDF's header says what it is.
    site.routes["/download?id=7"] = Route(
        pdf_with_text(["Stove care", "Clean the stove burner after every trip."]),
        content_type="application/octet-stream",
    )
    site.routes["/returns"] = Route(RETURNS)
    site.routes["/sitemap.xml"] = site.sitemap(
        ["/guides/warranty.pdf", "/download?id=7", "/returns"]
    )
    source = web_source_add(url=site.url("/sitemap.xml"))
    report = web_source_sync(source=source, inline=True)
    assert report.counts == {"changed": 3}, report.errors
    warranty = _document(site.url("/guides/warranty.pdf"))
    assert warranty.source_name.endswith(".pdf") and warranty.source_type == "pdf"
    assert warranty.status == KnowledgeDocument.Status.READY and warranty.title == "Tent warranty"
    assert "two year warranty" in " ".join(c.text for c in warranty.chunks.all())
    stove = _document(site.url("/download?id=7"))
    assert stove.status == KnowledgeDocument.Status.READY
    assert "stove burner" in " ".join(c.text for c in stove.chunks.all())
    # A citation of the PDF opens the file at the passage's page.
    chunk = warranty.chunks.first()
    passage = Passage(
        chunk_id=chunk.id,
        document_id=warranty.id,
        document_version=warranty.version,
        title=warranty.title,
        heading=chunk.heading,
        text=chunk.text,
        similarity=0.9,
        page=chunk.page,
    )
    [linked] = async_to_sync(passages_linked)([passage])
    assert chunk.page == 1 and linked.url == site.url("/guides/warranty.pdf#page=1")
    # Unchanged on the next sync (304); then the address serves an HTML page instead.
    assert web_source_sync(source=source, inline=True).counts == {"unchanged": 3}
    site.routes["/guides/warranty.pdf"] = Route(RETURNS)
    assert web_source_sync(source=source, inline=True).counts == {"changed": 1, "unchanged": 2}
    replaced = _document(site.url("/guides/warranty.pdf"))
    assert replaced.source_name.endswith(".md") and replaced.title == "Returns policy"
    assert not KnowledgeDocument.objects.filter(id=warranty.id).exists()
    assert KnowledgeDocument.objects.filter(web_page__isnull=False).count() == 3


@db
def test_a_file_that_is_neither_html_nor_pdf_is_refused_with_its_type(
    site: SiteServer, web_settings: Any
) -> None:
    site.routes["/prices.json"] = Route(b'{"tent": 199}', content_type="application/json")
    source = web_source_add(url=site.url("/prices.json"))
    report = web_source_sync(source=source, inline=True)
    assert report.counts == {"failed": 1}
    assert report.errors == [
        f"{site.url('/prices.json')}: not an HTML page or a PDF (application/json)"
    ]
    assert not KnowledgeDocument.objects.exists()


@db
def test_server_errors_retire_a_page_only_after_repeated_failures(
    site: SiteServer, web_settings: Any
) -> None:
    site.routes["/shipping"] = Route(
        article("Shipping", {("Delivery times", "times"): "Orders ship within two days."})
    )
    source = web_source_add(url=site.url("/shipping"))
    web_source_sync(source=source, inline=True)
    document = _document(site.url("/shipping"))
    site.routes["/shipping"] = Route(b"upstream down", status=503, validators=False)
    assert web_source_sync(source=source, inline=True).counts == {"failed": 1}
    # The last good version keeps serving through one failure...
    document.refresh_from_db()
    assert document.status == KnowledgeDocument.Status.READY
    page = WebPage.objects.get(url=site.url("/shipping"))
    assert page.failures == 1 and "503" in page.error
    # ... and is retired after WEB_RETIRE_AFTER_FAILURES (2 here) in a row.
    assert web_source_sync(source=source, inline=True).counts == {"retired": 1}
    assert not KnowledgeDocument.objects.filter(id=document.id).exists()


@db
def test_robots_txt_disallow_is_respected(site: SiteServer, web_settings: Any) -> None:
    site.routes["/robots.txt"] = Route(
        b"User-agent: *\nDisallow: /internal/\n", content_type="text/plain"
    )
    site.routes["/internal/notes"] = Route(RETURNS)
    site.routes["/guide"] = Route(RETURNS)
    source = web_source_add(url=site.url("/internal/notes"))
    web_source_sync(source=source, inline=True)
    source.refresh_from_db()
    assert "robots.txt does not allow" in source.error
    assert "/internal/notes" not in site.hits
    assert not KnowledgeDocument.objects.exists()
    # A page indexed while allowed is retired once robots.txt disallows it.
    guide = web_source_add(url=site.url("/guide"))
    assert web_source_sync(source=guide, inline=True).counts == {"changed": 1}
    site.routes["/robots.txt"] = Route(b"User-agent: *\nDisallow: /\n", content_type="text/plain")
    assert web_source_sync(source=guide, inline=True).counts == {"retired": 1}
    assert site.hits["/guide"] == 1
    assert not KnowledgeDocument.objects.exists()


def test_requests_are_spaced_by_the_crawl_delay_robots_txt_gives_this_fetcher(
    site: SiteServer, web_settings: Any
) -> None:
    site.routes["/robots.txt"] = Route(
        b"User-agent: *\nCrawl-delay: 30\n\nUser-agent: FrugalChatbot\nCrawl-delay: 2\n",
        content_type="text/plain",
    )
    site.routes["/a"] = Route(RETURNS)
    site.routes["/b"] = Route(RETURNS)
    # Waiting for the delay does not count against a page's time limit.
    web_settings.WEB_TIMEOUT_SECONDS = 1.5
    web_settings.WEB_CRAWL_DELAY_MAX_SECONDS = 60
    with Fetcher.for_url(site.url("/a")) as fetcher:
        assert fetcher.get(site.url("/a")).status == 200
        assert fetcher.get(site.url("/b")).status == 200
    gaps = site.gaps()
    assert [path for path, _ in gaps] == ["/a", "/b"]
    # Its own group's 2 s after robots.txt and between pages, not the other agents' 30 s.
    assert all(2.0 <= gap < 6.0 for _, gap in gaps), gaps
    assert 3.0 < fetcher.waited < 12.0


def test_without_a_delay_in_robots_txt_requests_are_not_spaced(
    site: SiteServer, web_settings: Any
) -> None:
    site.routes["/robots.txt"] = Route(b"User-agent: *\nDisallow:\n", content_type="text/plain")
    site.routes["/a"] = Route(RETURNS)
    with Fetcher.for_url(site.url("/a")) as fetcher:
        for _ in range(3):
            assert fetcher.get(site.url("/a")).status == 200
    assert fetcher.waited == 0.0 and site.hits == {"/robots.txt": 1, "/a": 3}


@db
def test_a_sync_keeps_to_the_request_rate_up_to_the_longest_delay_allowed(
    site: SiteServer, web_settings: Any, caplog: Any
) -> None:
    site.routes["/robots.txt"] = Route(
        b"User-agent: *\nRequest-rate: 1/30\n", content_type="text/plain"
    )
    for path in ("/help/one", "/help/two"):
        site.routes[path] = Route(RETURNS)
    site.routes["/sitemap.xml"] = site.sitemap(["/help/one", "/help/two"])
    # 30 s per request asked, 1 s allowed: a site cannot hold the worker for as long as it likes.
    web_settings.WEB_CRAWL_DELAY_MAX_SECONDS = 1
    source = web_source_add(url=site.url("/sitemap.xml"))
    report = web_source_sync(source=source)
    assert report.counts == {"changed": 2} and report.requests == 4
    gaps = site.gaps()
    assert [path for path, _ in gaps] == ["/sitemap.xml", "/help/one", "/help/two"]
    assert all(1.0 <= gap < 5.0 for _, gap in gaps), gaps
    assert 2.0 < report.waited < 15.0
    assert "asks for 30 s between requests; waiting 1 s" in caplog.text


@db
def test_a_sitemap_syncs_its_pages_and_retires_the_ones_it_drops(
    site: SiteServer, web_settings: Any
) -> None:
    pages = {
        "/help/returns": RETURNS,
        "/help/shipping": article(
            "Shipping", {("Delivery times", "times"): "Orders ship within two working days."}
        ),
        "/help/warranty": article(
            "Warranty", {("What is covered", "covered"): "Tents carry a two year warranty."}
        ),
    }
    for path, body in pages.items():
        site.routes[path] = Route(body)

    def sitemap(paths: list[str]) -> bytes:
        locs = "".join(f"<url><loc>{site.url(p)}</loc></url>" for p in paths)
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{locs}'
            f"<url><loc>{site.url('/elsewhere', 'localhost')}</loc></url></urlset>"
        ).encode()

    # The child sitemap is a gzipped file (sitemap.xml.gz), as large sites serve them.
    site.routes["/sitemap-help.xml.gz"] = Route(
        gzip.compress(sitemap(list(pages))), content_type="application/gzip"
    )
    site.routes["/sitemap.xml"] = Route(
        (
            '<?xml version="1.0"?><sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
            f"<sitemap><loc>{site.url('/sitemap-help.xml.gz')}</loc></sitemap></sitemapindex>"
        ).encode(),
        content_type="application/xml",
    )
    source = web_source_add(url=site.url("/sitemap.xml"))
    report = web_source_sync(source=source, inline=True)
    source.refresh_from_db()
    assert source.kind == WebSource.Kind.SITEMAP
    assert report.counts == {"changed": 3}
    assert any("not this source's site" in e for e in report.errors)  # the off-site entry
    assert "/elsewhere" not in site.hits
    titles = set(KnowledgeDocument.objects.filter(status="ready").values_list("title", flat=True))
    assert titles == {"Returns policy", "Shipping", "Warranty"}

    site.routes["/sitemap-help.xml.gz"] = Route(
        gzip.compress(sitemap(["/help/returns", "/help/shipping"])),
        content_type="application/gzip",
    )
    report = web_source_sync(source=source, inline=True)
    assert report.counts == {"unchanged": 2, "retired": 1}
    warranty = WebPage.objects.get(url=site.url("/help/warranty"))
    assert warranty.state == WebPage.State.RETIRED and "sitemap" in warranty.error
    assert KnowledgeDocument.objects.count() == 2

    # Deleting the source deletes its documents, and so retires the answers that cited them.
    entry = _cache_entry_citing(_document(site.url("/help/returns")))
    source.delete()
    assert not KnowledgeDocument.objects.exists()
    entry.refresh_from_db()
    assert not entry.active


@db
async def test_web_passages_carry_a_link_to_their_live_section(
    site: SiteServer, web_settings: Any
) -> None:
    from asgiref.sync import sync_to_async

    from retrieval.search import passages_search

    site.routes["/returns"] = Route(RETURNS)
    await sync_to_async(web_source_sync)(
        source=await sync_to_async(web_source_add)(url=site.url("/returns")), inline=True
    )
    found = await passages_search(
        question="Can I return gift cards or perishable food?", k=5, min_similarity=0.0
    )
    linked = await passages_linked(found)
    cited = [p for p in linked if "Gift cards" in p.text]
    assert cited and cited[0].url == site.url("/returns") + "#exceptions"
    # A file document keeps no live link (its citation opens the internal passage page).
    file_passage = Passage(
        chunk_id=1,
        document_id=-1,
        document_version=1,
        title="t",
        heading="",
        text="x",
        similarity=0.5,
    )
    assert (await passages_linked([file_passage]))[0].url == ""


@db
def test_the_ingest_command_takes_a_url(site: SiteServer, web_settings: Any) -> None:
    site.routes["/returns"] = Route(RETURNS)
    site.routes["/robots.txt"] = Route(
        b"User-agent: *\nCrawl-delay: 2\n", content_type="text/plain"
    )
    out = io.StringIO()
    call_command("ingest", site.url("/returns"), "--inline", "--verbosity", "0", stdout=out)
    assert "changed: 1 (waited 2 s between requests, as its robots.txt asks)" in out.getvalue()
    assert "ready: 1 documents" in out.getvalue()
    assert _document(site.url("/returns")).status == KnowledgeDocument.Status.READY
    # A URL the fetcher would never take is a clear error.
    with pytest.raises(CommandError, match="the URL has no host"):
        call_command("ingest", "https:///nohost", stdout=io.StringIO())


@db
def test_resync_is_scheduled_on_the_task_worker(site: SiteServer, web_settings: Any) -> None:
    site.routes["/returns"] = Route(RETURNS)
    source = web_source_add(url=site.url("/returns"))
    assert web_sync_ensure()
    assert not web_sync_ensure()  # one waiting run is enough
    queued = DBTaskResult.objects.get(task_path=web_sync_task.module_path)
    assert queued.status == TaskResultStatus.READY and queued.run_after <= timezone.now()
    queued.delete()
    totals = web_sync_task.call()
    assert totals == {"changed": 1}
    source.refresh_from_db()
    assert source.next_sync_at > timezone.now()
    # The next run waits for the source's next due time.
    following = DBTaskResult.objects.get(
        task_path=web_sync_task.module_path, status=TaskResultStatus.READY
    )
    assert abs((following.run_after - source.next_sync_at).total_seconds()) < 1
    # Queued (not inline) from the task: the changed page went to the ingestion queue.
    assert _document(site.url("/returns")).status == KnowledgeDocument.Status.QUEUED


@db
def test_an_admin_adds_a_source_and_the_worker_is_asked_to_fetch_it(admin_client: Any) -> None:
    response = admin_client.post(
        "/admin/retrieval/websource/add/", {"url": "ftp://help.acme.test/"}, follow=True
    )
    assert "only http and https" in response.content.decode()
    assert not WebSource.objects.exists()
    response = admin_client.post(
        "/admin/retrieval/websource/add/",
        {
            "url": "https://help.acme.test/sitemap.xml#top",
            "pages-TOTAL_FORMS": "0",
            "pages-INITIAL_FORMS": "0",
        },
        follow=True,
    )
    assert response.status_code == 200
    source = WebSource.objects.get()
    assert source.url == "https://help.acme.test/sitemap.xml"
    assert DBTaskResult.objects.filter(
        task_path=web_sync_task.module_path, status=TaskResultStatus.READY
    ).exists()
    assert admin_client.get("/admin/retrieval/websource/").status_code == 200
    assert admin_client.get(f"/admin/retrieval/websource/{source.id}/change/").status_code == 200
    assert admin_client.get("/admin/retrieval/webpage/").status_code == 200


@db
def test_a_real_worker_syncs_a_due_source_and_indexes_its_page(
    site: SiteServer, web_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.retrieval.test_worker import run_worker_batch

    # The worker is another process: it reads the setting from its environment.
    monkeypatch.setenv("WEB_ALLOW_PRIVATE_ADDRESSES", "1")
    site.routes["/returns"] = Route(RETURNS)
    source = web_source_add(url=site.url("/returns"))
    assert web_sync_ensure()
    # Syncs have a queue and a worker of their own: the ingestion worker leaves them.
    run_worker_batch()
    source.refresh_from_db()
    assert source.last_synced_at is None
    run_worker_batch(queue="web")
    # The page's document was queued for the ingestion worker.
    run_worker_batch()
    source.refresh_from_db()
    assert source.kind == WebSource.Kind.PAGE and source.error == ""
    document = _document(site.url("/returns"))
    assert document.status == KnowledgeDocument.Status.READY, document.error
    assert Chunk.objects.filter(document=document).exists()
    # The next sync waits for its time; the batch worker left it queued.
    assert DBTaskResult.objects.filter(
        task_path=web_sync_task.module_path, status=TaskResultStatus.READY
    ).exists()


@db
def test_an_upload_is_ingested_while_a_slow_site_syncs(
    site: SiteServer, web_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from retrieval.services import document_upload
    from tests.retrieval.test_worker import (
        ROOT,
        run_worker_batch,
        worker_batch_command,
        worker_database_url,
    )

    monkeypatch.setenv("WEB_ALLOW_PRIVATE_ADDRESSES", "1")
    monkeypatch.setenv("WEB_CRAWL_DELAY_MAX_SECONDS", "10")
    site.routes["/robots.txt"] = Route(
        b"User-agent: *\nCrawl-delay: 10\n", content_type="text/plain"
    )
    site.routes["/sitemap.xml"] = site.sitemap(["/help/one", "/help/two", "/help/three"])
    for path in ("/help/one", "/help/two", "/help/three"):
        site.routes[path] = Route(RETURNS)
    source = web_source_add(url=site.url("/sitemap.xml"))
    assert web_sync_ensure()
    syncing = subprocess.Popen(
        worker_batch_command("web"),
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": worker_database_url()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while "/robots.txt" not in site.hits and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "/robots.txt" in site.hits  # the sync is under way: 40 s, 10 s between requests
        upload = document_upload(
            source_name="gift-cards.md", data=b"# Gift cards\n\nGift cards never expire."
        )
        started = time.monotonic()
        run_worker_batch()
        took = time.monotonic() - started
        upload.refresh_from_db()
        assert upload.status == KnowledgeDocument.Status.READY
        # Ready while the sync still waits on the site.
        assert syncing.poll() is None and "/help/three" not in site.hits, (took, site.gaps())
        assert syncing.wait(timeout=120) == 0, syncing.stderr.read()[-2000:]
    finally:
        if syncing.poll() is None:
            syncing.kill()
        syncing.wait()
    source.refresh_from_db()
    assert source.last_synced_at is not None and source.error == ""
    assert site.hits["/help/three"] == 1


def test_https_goes_to_the_checked_address_with_the_name_in_sni_and_verifies_the_certificate(
    site: SiteServer, settings: Any, tmp_path: Any
) -> None:
    import ssl
    import subprocess

    settings.WEB_ALLOW_PRIVATE_ADDRESSES = True
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(tmp_path / "key.pem"),
            "-out",
            str(tmp_path / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
    names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            context.wrap_socket(conn, server_side=True).close()
        except (ssl.SSLError, OSError):
            pass  # the client refuses the self-signed certificate mid-handshake

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"https://localhost:{port}/robots.txt"
    with Fetcher.for_url(url) as fetcher, pytest.raises(WebUnavailable, match="CERTIFICATE"):
        fetcher.get(url)
    thread.join(5)
    listener.close()
    # The connection went to the resolved address, but TLS was told the name: the certificate
    # is checked against it (and refused here, being self-signed), never skipped.
    assert names == ["localhost"]
