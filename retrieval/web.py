"""Fetching web pages with limits, and extracting their main content with its section anchors.

The fetcher runs on the server with the server's network access, on URLs an admin typed or a
sitemap listed, so it must not become a way into that network: every host is resolved and each
of its addresses checked (no private, loopback, link-local or reserved address unless
WEB_ALLOW_PRIVATE_ADDRESSES), and the connection goes to the checked address (with the real
host in the Host header and TLS SNI, so certificates are still verified) so a second DNS answer
cannot swap in another one. Redirects are followed by hand, each target checked again. Pages
come only from the source's own site (plus WEB_ALLOWED_HOSTS), as robots.txt allows, within a
size and a time cap, and no faster than its Crawl-delay or Request-rate asks (up to
WEB_CRAWL_DELAY_MAX_SECONDS between requests).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import select
import socket
import subprocess
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit, urlunsplit
from urllib.robotparser import RobotFileParser

import httpx2 as httpx
from django.conf import settings

if TYPE_CHECKING:  # the extraction child imports this module: it needs no search stack
    from retrieval.search import Passage

logger = logging.getLogger(__name__)

_REDIRECTS = (301, 302, 303, 307, 308)
_HTML_TYPES = ("text/html", "application/xhtml+xml")
_XML_TYPES = ("application/xml", "text/xml")
# A file served gzipped (sitemap.xml.gz), not a content encoding.
_GZIP_TYPES = ("application/gzip", "application/x-gzip")
# Google's cap for robots.txt; anything past it is ignored.
_ROBOTS_MAX_BYTES = 500_000
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class WebRefused(Exception):
    """The fetcher will not fetch this URL (address, site, robots.txt, size, type); says why."""


class RobotsDisallowed(WebRefused):
    """The site's robots.txt does not allow this fetcher the URL."""


class WebUnavailable(Exception):
    """The page could not be fetched this time (timeout, connection error, 5xx robots.txt)."""


@dataclass(frozen=True)
class Fetched:
    """A response: the URL it came from after redirects, its status, validators and body."""

    url: str
    status: int
    content_type: str = ""
    etag: str = ""
    last_modified: str = ""
    body: bytes = b""

    @property
    def is_sitemap(self) -> bool:
        """Whether the body is an XML sitemap or sitemap index."""
        head = self.body[:2000].lstrip().lower()
        return (self.content_type in _XML_TYPES or head.startswith(b"<?xml")) and (
            b"<urlset" in head or b"<sitemapindex" in head
        )

    @property
    def is_pdf(self) -> bool:
        """Whether the body is a PDF: said so, or a PDF's header behind a type that says nothing."""
        if self.content_type == "application/pdf":
            return True
        return self.content_type in ("", "application/octet-stream") and self.body.startswith(
            b"%PDF-"
        )

    @property
    def is_html(self) -> bool:
        """Whether the body is to be read as an HTML page (so typed, or not typed at all)."""
        return not self.content_type or self.content_type in _HTML_TYPES


def url_check(url: str) -> str:
    """The URL normalised (no fragment), or WebRefused: http(s), a host, no user:password."""
    url = url.strip()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebRefused(f"{url}: not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise WebRefused(f"{url}: only http and https URLs can be fetched")
    if not parts.hostname:
        raise WebRefused(f"{url}: the URL has no host")
    if parts.username or parts.password:
        raise WebRefused(f"{url}: a URL with a user name or password is not accepted")
    netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    if port is not None:
        netloc = f"{netloc}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))


def site_hosts(url: str) -> frozenset[str]:
    """The hosts counted as the URL's own site: its host, with and without 'www.'."""
    host = (urlsplit(url).hostname or "").lower()
    bare = host.removeprefix("www.")
    return frozenset({host, bare, f"www.{bare}"})


def address_allowed(address: str) -> bool:
    """Whether an IP address is a public one (not private, loopback, link-local, reserved,
    multicast, shared or unspecified; IPv4 inside IPv6 is judged as IPv4)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            ip = embedded
    return ip.is_global and not ip.is_multicast


def _resolve(host: str, port: int) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise WebUnavailable(f"{host}: the name does not resolve ({exc})") from None
    return list(dict.fromkeys(info[4][0] for info in infos))


@dataclass
class Fetcher:
    """Fetches pages of one site with the limits above; one per sync run (robots.txt is kept)."""

    hosts: frozenset[str]
    allow_private: bool = field(default_factory=lambda: settings.WEB_ALLOW_PRIVATE_ADDRESSES)
    max_bytes: int = field(default_factory=lambda: settings.WEB_MAX_BYTES)
    timeout: float = field(default_factory=lambda: settings.WEB_TIMEOUT_SECONDS)
    max_redirects: int = field(default_factory=lambda: settings.WEB_MAX_REDIRECTS)
    user_agent: str = field(default_factory=lambda: settings.WEB_USER_AGENT)
    max_delay: float = field(default_factory=lambda: settings.WEB_CRAWL_DELAY_MAX_SECONDS)
    requests: int = 0  # HTTP requests made (robots.txt included)
    waited: float = 0.0  # seconds spent waiting for robots.txt's crawl delay
    _robots: dict[str, RobotFileParser | None] = field(default_factory=dict)
    # By origin: seconds between requests (robots.txt's), and the earliest time
    # (time.monotonic) its next request may start.
    _delays: dict[str, float] = field(default_factory=dict)
    _next_at: dict[str, float] = field(default_factory=dict)
    _clients: dict[str, httpx.Client] = field(default_factory=dict)

    @classmethod
    def for_url(cls, url: str, **kwargs: object) -> Fetcher:
        """A fetcher for the site of this URL (plus WEB_ALLOWED_HOSTS)."""
        return cls(hosts=site_hosts(url) | frozenset(settings.WEB_ALLOWED_HOSTS), **kwargs)

    def close(self) -> None:
        """Close the connections."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, url: str, *, etag: str = "", last_modified: str = "") -> Fetched:
        """GET a page of the site, following redirects by hand (each one checked); a conditional
        request when a validator is given (304: nothing changed). WebRefused or WebUnavailable
        when it cannot be fetched; 4xx and 5xx come back as a status."""
        headers = {
            "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,application/pdf;q=0.8"
        }
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        seen: list[str] = []
        current = url_check(url)
        deadline = time.monotonic() + self.timeout
        while True:
            self.site_check(current)
            if not self.robots_allows(current):
                raise RobotsDisallowed(f"{current}: robots.txt does not allow fetching it")
            seen.append(current)
            # Waiting for the site's crawl delay is not the page being slow.
            deadline += self._pace(current)
            fetched, location = self._request(current, headers, deadline, self.max_bytes)
            if location is None:
                return fetched
            target = url_check(urljoin(current, location))
            if target in seen:
                raise WebRefused(f"{url}: redirect loop ({' -> '.join([*seen, target])})")
            if len(seen) > self.max_redirects:
                raise WebRefused(
                    f"{url}: more than {self.max_redirects} redirects (WEB_MAX_REDIRECTS)"
                )
            current = target

    def robots_allows(self, url: str) -> bool:
        """Whether the site's robots.txt lets this fetcher's user agent fetch the URL."""
        origin = _origin(url)
        if origin not in self._robots:
            self._robots[origin] = self._robots_load(origin)
            self._delays[origin] = self._delay_asked(origin)
            # The first page waits too: robots.txt was a request to the site.
            self._next_at[origin] = time.monotonic() + self._delays[origin]
        robots = self._robots[origin]
        return robots is None or robots.can_fetch(self.user_agent, url)

    def _delay_asked(self, origin: str) -> float:
        """Seconds between requests to this origin: what its robots.txt asks of this user agent
        (Crawl-delay, or Request-rate's seconds per request, whichever is longer; whole numbers,
        as urllib.robotparser reads them), at most max_delay."""
        robots = self._robots.get(origin)
        if robots is None:
            return 0.0
        asked = float(robots.crawl_delay(self.user_agent) or 0)
        rate = robots.request_rate(self.user_agent)
        if rate is not None and rate.requests > 0:
            asked = max(asked, rate.seconds / rate.requests)
        if asked > self.max_delay:
            logger.warning(
                "%s/robots.txt asks for %g s between requests; waiting %g s "
                "(WEB_CRAWL_DELAY_MAX_SECONDS)",
                origin,
                asked,
                self.max_delay,
            )
            return self.max_delay
        return asked

    def _pace(self, url: str) -> float:
        """Sleep until the URL's origin may be asked again; returns the seconds slept."""
        wait = self._next_at.get(_origin(url), 0.0) - time.monotonic()
        if wait <= 0:
            return 0.0
        time.sleep(wait)
        self.waited += wait
        return wait

    def _robots_load(self, origin: str) -> RobotFileParser | None:
        current, deadline = f"{origin}/robots.txt", time.monotonic() + self.timeout
        for _ in range(self.max_redirects + 1):
            self.site_check(current)
            fetched, location = self._request(current, {}, deadline, _ROBOTS_MAX_BYTES)
            if location is None:
                break
            current = url_check(urljoin(current, location))
        else:
            return None  # a robots.txt lost in redirects counts as none (RFC 9309 2.3.1.2)
        parser = RobotFileParser()
        if fetched.status in (401, 403):
            parser.disallow_all = True
        elif fetched.status >= 500:
            # RFC 9309: a server error means "assume complete disallow" for now; not a verdict
            # on the pages, so the sync counts it as a failure rather than retiring them.
            raise WebUnavailable(f"{origin}/robots.txt answered {fetched.status}")
        elif fetched.status >= 400:
            return None
        else:
            parser.parse(fetched.body.decode("utf-8", "replace").splitlines())
        return parser

    def site_check(self, url: str) -> None:
        """WebRefused unless the URL's host is this fetcher's site (or allowed)."""
        host = (urlsplit(url).hostname or "").lower()
        if host not in self.hosts:
            raise WebRefused(
                f"{url}: {host} is not this source's site ({', '.join(sorted(self.hosts))}); "
                "add it to WEB_ALLOWED_HOSTS to allow it"
            )

    def _connect_url(self, url: str) -> tuple[httpx.URL, dict[str, str], dict[str, str]]:
        """The URL with the host swapped for a checked address, the Host header and the SNI."""
        target = httpx.URL(url)
        host, port = target.host, target.port or (443 if target.scheme == "https" else 80)
        addresses = _resolve(host, port)
        if not self.allow_private:
            refused = [a for a in addresses if not address_allowed(a)]
            if refused:
                raise WebRefused(
                    f"{url}: {host} resolves to a private, loopback, link-local or reserved "
                    f"address ({', '.join(refused)}); set WEB_ALLOW_PRIVATE_ADDRESSES to allow it"
                )
        if not addresses:
            raise WebUnavailable(f"{host}: the name has no address")
        host_header = target.netloc.decode("ascii")
        return target.copy_with(host=addresses[0]), {"Host": host_header}, {"sni_hostname": host}

    def _client(self, host: str) -> httpx.Client:
        # One client per host: pooled connections are keyed by address, and two hosts sharing an
        # address must not share a TLS connection made for the other's name.
        if host not in self._clients:
            self._clients[host] = httpx.Client(
                follow_redirects=False,
                trust_env=False,
                timeout=httpx.Timeout(min(self.timeout, 10.0)),
                headers={"User-Agent": self.user_agent, "Accept-Encoding": "gzip, deflate"},
            )
        return self._clients[host]

    def _request(
        self, url: str, headers: dict[str, str], deadline: float, max_bytes: int
    ) -> tuple[Fetched, str | None]:
        """One request to a checked address; (response, the redirect target or None)."""
        target, host_header, extensions = self._connect_url(url)
        client = self._client(host_header["Host"])
        request = client.build_request(
            "GET", target, headers={**headers, **host_header}, extensions=extensions
        )
        self.requests += 1
        origin = _origin(url)
        try:
            response = client.send(request, stream=True)
            try:
                if response.status_code in _REDIRECTS and response.headers.get("location"):
                    return Fetched(url=url, status=response.status_code), response.headers[
                        "location"
                    ]
                body = b""
                content_type = (
                    response.headers.get("content-type", "").split(";")[0].strip().lower()
                )
                if response.status_code == 200:
                    body = self._body(url, response, deadline, max_bytes)
                    gzipped = content_type in _GZIP_TYPES or urlsplit(url).path.endswith(".gz")
                    if gzipped and body[:2] == b"\x1f\x8b":
                        body = _decoder(url, "gzip")(body, max_bytes + 1)
                        if len(body) > max_bytes:
                            raise WebRefused(
                                f"{url}: the file unpacks to over {max_bytes:,} bytes (WEB_MAX_BYTES)"
                            )
                        content_type = ""
                return (
                    Fetched(
                        url=url,
                        status=response.status_code,
                        content_type=content_type,
                        etag=response.headers.get("etag", "")[:300],
                        last_modified=response.headers.get("last-modified", "")[:100],
                        body=body,
                    ),
                    None,
                )
            finally:
                response.close()
        except httpx.TimeoutException:
            raise WebUnavailable(f"{url}: timed out") from None
        except httpx.TransportError as exc:
            raise WebUnavailable(f"{url}: {type(exc).__name__}: {exc}") from None
        finally:
            # The delay counts from the end of this request, as a polite crawler's does.
            if origin in self._delays:
                self._next_at[origin] = time.monotonic() + self._delays[origin]

    def _body(self, url: str, response: httpx.Response, deadline: float, max_bytes: int) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise WebRefused(f"{url}: the page is {int(declared):,} bytes, over {max_bytes:,}")
        decoder = _decoder(url, response.headers.get("content-encoding", ""))
        parts: list[bytes] = []
        size = 0
        # The raw stream is decoded here with an output cap: httpx would inflate a compressed
        # chunk whole, and a few kilobytes of gzip can expand to gigabytes.
        for raw in response.iter_raw():
            if time.monotonic() > deadline:
                raise WebUnavailable(f"{url}: took longer than {self.timeout:g} s")
            data = decoder(raw, max_bytes - size + 1) if decoder else raw
            size += len(data)
            if size > max_bytes:
                raise WebRefused(f"{url}: the page is over {max_bytes:,} bytes (WEB_MAX_BYTES)")
            parts.append(data)
        return b"".join(parts)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _decoder(url: str, encoding: str):  # noqa: ANN202 - (bytes, int) -> bytes | None
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise WebRefused(f"{url}: unsupported content encoding {encoding!r}")
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header, detected

    def decode(data: bytes, limit: int) -> bytes:
        try:
            out = inflater.decompress(data, limit)
        except zlib.error as exc:
            raise WebRefused(f"{url}: the compressed body is corrupt ({exc})") from None
        if inflater.unconsumed_tail:
            out += b"\0"  # more than the limit: the caller sees the size go over it
        return out

    return decode


# --- Content -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ExtractedPage:
    """A page's main content as markdown (headings kept), its title and its headings' anchors."""

    title: str
    text: str
    anchors: dict[str, str]


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def page_extract(*, html: bytes, url: str) -> ExtractedPage:
    """The main content of an HTML page (no navigation, footers or cookie banners: trafilatura),
    as markdown with its headings; WebRefused if the page has none."""
    import lxml.html
    import trafilatura

    text = trafilatura.extract(
        html,
        url=url,
        output_format="markdown",
        include_formatting=True,
        include_tables=True,
        include_links=False,
        include_images=False,
        include_comments=False,
        with_metadata=False,
    )
    if not text or not text.strip():
        raise WebRefused(f"{url}: no main content could be extracted from the page")
    metadata = trafilatura.extract_metadata(html, default_url=url)
    title = _normal(metadata.title or "") if metadata is not None else ""
    anchors: dict[str, str] = {}
    try:
        tree = lxml.html.fromstring(html)
    except (ValueError, lxml.etree.ParserError):
        tree = None
    if tree is not None:
        for heading in tree.iter("h1", "h2", "h3", "h4", "h5", "h6"):
            name = _normal(heading.text_content())
            anchor = _heading_anchor(heading)
            if name and anchor and name not in anchors:
                anchors[name] = anchor
    return ExtractedPage(title=title[:300], text=text.strip() + "\n", anchors=anchors)


def _heading_anchor(heading) -> str:  # noqa: ANN001 - an lxml element
    """The id a link can jump to for this heading: its own, an anchor inside it, or that of the
    section it opens."""
    if heading.get("id"):
        return heading.get("id")
    for inner in heading.iter("a", "span"):
        if inner.get("id") or inner.get("name"):
            return inner.get("id") or inner.get("name")
    parent = heading.getparent()
    if parent is not None and parent.tag in ("section", "article", "div") and parent.get("id"):
        first = next((c for c in parent if isinstance(c.tag, str)), None)
        if first is heading:
            return parent.get("id")
    return ""


class Extractor:
    """Runs page_extract in a child process, page after page: trafilatura and lxml parse
    untrusted HTML, so the child has INGEST_PARSE_MEMORY_BYTES of memory and each page
    WEB_TIMEOUT_SECONDS; a child that fails is replaced. Started on the first page that needs
    it (a sync where every page answers 304 starts none)."""

    def __init__(self, *, timeout: float | None = None) -> None:
        self.timeout = settings.WEB_TIMEOUT_SECONDS if timeout is None else timeout
        self._child: subprocess.Popen | None = None

    def __enter__(self) -> Extractor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the child."""
        child, self._child = self._child, None
        if child is not None:
            child.kill()
            child.wait()
            for stream in (child.stdin, child.stdout):
                stream.close()

    def extract(self, *, html: bytes, url: str) -> ExtractedPage:
        """page_extract, in the child; WebRefused with the reason when it fails."""
        child = self._start()
        header = json.dumps({"url": url, "size": len(html)}).encode() + b"\n"
        try:
            child.stdin.write(header + html)
            child.stdin.flush()
            reply = self._reply(child, self.timeout)
        except (BrokenPipeError, TimeoutError, ValueError) as exc:
            self.close()
            if isinstance(exc, TimeoutError):
                raise WebRefused(
                    f"{url}: extracting the content took longer than {self.timeout:g} s"
                ) from None
            memory = settings.INGEST_PARSE_MEMORY_BYTES // 1_000_000
            raise WebRefused(
                f"{url}: the extractor failed on this page (more than {memory} MB of memory, "
                "INGEST_PARSE_MEMORY_BYTES, or a crash)"
            ) from None
        if "error" in reply:
            raise WebRefused(reply["error"])
        return ExtractedPage(**reply)

    def _start(self) -> subprocess.Popen:
        if self._child is not None and self._child.poll() is None:
            return self._child
        self.close()
        root = str(Path(__file__).resolve().parent.parent)
        boot = f"import sys; sys.path.insert(0, {root!r}); import retrieval.web as w; w._child()"
        self._child = subprocess.Popen(
            [sys.executable, "-I", "-c", boot, str(settings.INGEST_PARSE_MEMORY_BYTES)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=root,
            env={"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8"},
        )
        try:
            # Its imports take a moment (more on a busy machine): not counted against a page.
            if self._reply(self._child, 120.0) != {"ready": True}:
                raise ValueError("unexpected greeting")
        except (TimeoutError, ValueError):
            self.close()
            raise WebUnavailable("the content extractor did not start") from None
        return self._child

    @staticmethod
    def _reply(child: subprocess.Popen, timeout: float) -> dict:
        ready, _, _ = select.select([child.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError
        line = child.stdout.readline()
        if not line:
            raise ValueError("the extractor exited")
        return json.loads(line)


def _child() -> None:
    """The extractor child: reads {url, size} lines each followed by that many bytes of HTML,
    answers one JSON line each (an ExtractedPage or an error)."""
    import resource

    memory = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    # Extract a sample once so every lazy import is done before the greeting: the first page's
    # time limit then measures the page, not the imports.
    page_extract(
        html=b"<html><body><article><h2 id='a'>A</h2><p>" + b"Warm up. " * 40 + b"</p></article>"
        b"</body></html>",
        url="https://example.com/",
    )
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    sink.write(b'{"ready": true}\n')
    sink.flush()
    while header := source.readline():
        request = json.loads(header)
        html = source.read(request["size"])
        try:
            reply = asdict(page_extract(html=html, url=request["url"]))
        except WebRefused as exc:
            reply = {"error": str(exc)}
        except MemoryError:
            memory_mb = memory // 1_000_000
            reply = {
                "error": f"{request['url']}: extracting the content needed more than "
                f"{memory_mb} MB of memory (INGEST_PARSE_MEMORY_BYTES)"
            }
        except Exception as exc:  # noqa: BLE001 - any parser failure is this page's, reported
            reply = {"error": f"{request['url']}: the page could not be parsed ({exc})"[:500]}
        sink.write(json.dumps(reply).encode() + b"\n")
        sink.flush()


def sitemap_urls(body: bytes) -> tuple[list[str], list[str]]:
    """(page URLs, child sitemap URLs) listed in a sitemap or sitemap index; WebRefused if the
    XML is broken. Entities and DTDs are not loaded (no XXE, no billion laughs)."""
    from lxml import etree

    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    try:
        root = etree.fromstring(body, parser=parser)
    except etree.XMLSyntaxError as exc:
        raise WebRefused(f"the sitemap is not valid XML ({exc})") from None
    kind = etree.QName(root).localname
    locs = [
        (loc.text or "").strip()
        for loc in root.iter("{*}loc")
        if isinstance(loc.tag, str) and (loc.text or "").strip()
    ]
    if kind == "sitemapindex":
        return [], list(dict.fromkeys(locs))
    return list(dict.fromkeys(locs)), []


# --- Citations ---------------------------------------------------------------------------


def citation_url(
    *, url: str, anchors: dict[str, str], heading: str, page: int | None = None
) -> str:
    """The live page for a passage, at its section's anchor when the page has one (the passage's
    heading is a path 'Section > Subsection'; the innermost one with an anchor wins), or at its
    page of a PDF (`#page=N`, which browsers' PDF viewers open at)."""
    for name in reversed([h.strip() for h in heading.split(" > ") if h.strip()]):
        anchor = anchors.get(_normal(name))
        if anchor:
            return f"{url.split('#', 1)[0]}#{anchor}"
    if page is not None:
        return f"{url.split('#', 1)[0]}#page={page}"
    return url


async def passages_linked(passages: list[Passage]) -> list[Passage]:
    """The passages with `url` set to the live page (and section anchor) for web documents."""
    from retrieval.models import KnowledgeDocument

    ids = {p.document_id for p in passages}
    if not ids:
        return passages
    pages = {
        document_id: (url, anchors)
        async for document_id, url, anchors in KnowledgeDocument.objects.filter(
            id__in=ids, web_page__isnull=False
        ).values_list("id", "web_page__url", "web_page__anchors")
    }
    return [
        replace(
            p,
            url=citation_url(
                url=pages[p.document_id][0],
                anchors=pages[p.document_id][1],
                heading=p.heading,
                page=p.page,
            ),
        )
        if p.document_id in pages
        else p
        for p in passages
    ]
