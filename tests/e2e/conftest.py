"""Browser tests: Daphne serving the app on the test database, Debian's Chromium driven by Playwright."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.chatbot.conftest import help_centre  # noqa: F401 - a fixture shared with the socket tests
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "test-output"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def pytest_collection_modifyitems(config, items) -> None:  # noqa: ANN001
    """Skip browser tests with a clear reason where Debian's Chromium is not installed."""
    if os.path.exists(CHROMIUM):
        return
    skip = pytest.mark.skip(reason=f"{CHROMIUM} missing: run `make chromium`")
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def chromium(_sync_orm_beside_playwright):  # noqa: ANN001, ANN201 - playwright Browser
    """Debian's Chromium (Playwright cannot download its own here), one per test module so the
    Playwright loop never outlives the module (other modules start their own)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium):  # noqa: ANN001, ANN201 - playwright Page
    """A fresh browser context (own cookies, so its own Django session) and page per test."""
    context = chromium.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    yield page
    context.close()


def _test_database_url() -> str:
    from django.db import connection

    db = connection.settings_dict
    user = quote(db["USER"] or "")
    password = quote(db["PASSWORD"] or "")
    auth = f"{user}:{password}@" if user else ""
    if (db["HOST"] or "").startswith("/"):
        return f"postgresql://{auth}/{quote(db['NAME'])}?host={quote(db['HOST'])}"
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgresql://{auth}{db['HOST']}{port}/{quote(db['NAME'])}"


class LiveServer:
    """A Daphne process serving chatbot.asgi on loopback against the test database."""

    def __init__(self, database_url: str, extra_env: dict[str, str] | None = None) -> None:
        self.extra_env = extra_env or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database_url = database_url
        self.process: subprocess.Popen | None = None
        OUTPUT.mkdir(exist_ok=True)
        self.log = (OUTPUT / "e2e-daphne.log").open("ab")

    def start(self) -> None:
        env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "CHAT_DEFAULT_TIER": "small",
            "CHAT_RATE_LIMIT_PER_MINUTE": "1000",
            "CHAT_RATE_LIMIT_PER_ADDRESS_PER_MINUTE": "1000",  # every test browser is 127.0.0.1
            "SERVE_STATIC": "1",
            # The chat tests check tiers, tokens and costs, which customers see only with this.
            "CHAT_SHOW_DETAILS": "1",
            **self.extra_env,
        }
        from chatbot.management.commands.run_stack import daphne_command

        self.process = subprocess.Popen(
            daphne_command(bind="127.0.0.1", port=self.port),
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daphne exited; see {OUTPUT / 'e2e-daphne.log'}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise TimeoutError("daphne did not come up")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


@pytest.fixture(scope="session", autouse=True)
def _database_before_browser(django_db_setup) -> None:  # noqa: ANN001
    """Create the test database before Playwright's loop starts (see the fixture below)."""


@pytest.fixture(scope="module", autouse=True)
def _sync_orm_beside_playwright() -> Iterator[None]:
    """Playwright's sync API keeps an asyncio loop in this thread; Django would then refuse the
    plain ORM calls these tests make. Allowed only while browser tests run."""
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(scope="module")
def daphne_server(
    _sync_orm_beside_playwright, django_db_setup, django_db_blocker
) -> Iterator[LiveServer]:  # noqa: ANN001
    """Daphne on a free port for this module's tests (the data each test writes is committed)."""
    with django_db_blocker.unblock():
        server = LiveServer(_test_database_url())
    server.start()
    yield server
    server.stop()
    server.log.close()


@pytest.fixture(autouse=True)
def _close_async_db_connections() -> Iterator[None]:
    """Overrides the async version in tests/conftest.py: pytest-asyncio cannot start its runner
    inside Playwright's loop, and these sync tests never use the async ORM's thread."""
    yield
