"""The admin dashboard in Chromium: charts from fixture data, tuning applied from the curve, refusals.

A real Daphne serves the test database; the chat answer after applying a policy comes from
the real SmolLM2 server. Screenshots go to test-output/.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection

from tests.conftest import ROOT, ModelServer, free_port

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

OUT = ROOT / "test-output"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _database_url() -> str:
    db = connection.settings_dict
    user = db["USER"] or "postgres"
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    port = f":{db['PORT']}" if db["PORT"] else ""
    if db["HOST"].startswith("/"):  # the embedded server listens on a Unix socket folder
        return f"postgresql://{user}{password}@{port}/{db['NAME']}?host={db['HOST']}"
    return f"postgresql://{user}{password}@{db['HOST']}{port}/{db['NAME']}"


@pytest.fixture
def live_daphne(transactional_db: None) -> Iterator[str]:
    """Daphne in its own process over this test's database; yields its base URL."""
    port = free_port()
    OUT.mkdir(exist_ok=True)
    log = (OUT / "dashboard-daphne.log").open("wb")
    env = {**os.environ, "DATABASE_URL": _database_url(), "DJANGO_ALLOWED_HOSTS": "127.0.0.1"}
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "chatbot.asgi:application",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    import urllib.request

    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{base}/healthz", timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError(
                    "daphne did not start; see test-output/dashboard-daphne.log"
                ) from None
            time.sleep(0.3)
    yield base
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture
def browser_page(monkeypatch: pytest.MonkeyPatch) -> Iterator:  # noqa: ANN201
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the test's own ORM reads are
    # sequential and safe (Playwright's documented advice for Django tests).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        yield page
        browser.close()


DELIVERY_DOC = """# Delivery

Standard delivery within the United Kingdom takes three to five working days and costs
four pounds; orders over fifty pounds ship free. Express delivery arrives the next working
day when ordered before 2 pm.
"""


@pytest.fixture
def dashboard_data() -> None:
    """Two tiers, labelled demo traffic and a demo run, a staff user and a customer."""
    from django.contrib.auth import get_user_model

    from routing.models import ModelTier

    for name, order in (("small", 10), ("medium", 20)):
        ModelTier.objects.update_or_create(
            name=name,
            defaults=dict(
                base_url="http://127.0.0.1:9/v1",
                model="smollm2-135m",
                context_window=2048,
                max_answer_tokens=24,
                timeout_seconds=60,
                order=order,
                enabled=True,
                threshold=0.5,
                price_input_per_mtok=str(0.1 * order),
                price_output_per_mtok=str(0.4 * order),
            ),
        )
    call_command("load_demo_traffic", "--days", "7", "--per-day", "15", stdout=io.StringIO())
    _fixture_run()
    User = get_user_model()
    User.objects.create_superuser("boss", "boss@example.invalid", "boss-pass-123")
    User.objects.create_user("customer", "c@example.invalid", "customer-pass-123")
    # Fixtures and tests may run in different contexts, each with its own connection: close
    # this one, or the test database cannot be dropped at the end of the session.
    connection.close()


def _fixture_run() -> None:
    """A run an admin may tune from: the demo run's rows as a real run, split fit and test.

    The demo run itself is synthetic and can never be applied.
    """
    from routing.models import EvaluationRun

    demo = EvaluationRun.objects.get(settings__demo=True)
    run = EvaluationRun.objects.create(
        name="fixture run",
        dataset="browser test fixture",
        settings={},
        tiers=demo.tiers,
        thresholds=demo.thresholds,
        status=EvaluationRun.Status.COMPLETE,
    )
    rows = list(demo.results.all())
    for row in rows:
        number = int(row.question_id.removeprefix("demo-"))
        row.pk, row.run, row.split = None, run, "fit" if number % 2 else "test"
        row.call_cost = row.cost
    type(rows[0]).objects.bulk_create(rows)


@pytest.fixture
def answering(dashboard_data: None, small_model_server: ModelServer, tmp_path: Path) -> None:
    """Both tiers served by the real small model, and one help page a question can retrieve."""
    from routing.models import ModelTier

    ModelTier.objects.update(base_url=small_model_server.base_url)
    (tmp_path / "delivery.md").write_text(DELIVERY_DOC)
    call_command("load_demo_knowledge", "--folder", str(tmp_path), stdout=io.StringIO())
    connection.close()


def _login(page, base: str, user: str, password: str) -> None:  # noqa: ANN001
    page.goto(f"{base}/admin/login/?next=/admin/dashboard/")
    page.fill("#id_username", user)
    page.fill("#id_password", password)
    page.click("input[type=submit]")


def test_refused_to_anonymous_and_customers(
    live_daphne: str, browser_page, dashboard_data: None
) -> None:  # noqa: ANN001
    page = browser_page
    page.goto(f"{live_daphne}/admin/dashboard/")
    assert "/admin/login/" in page.url
    response = page.goto(f"{live_daphne}/admin/dashboard/data.json")
    assert response is not None and response.status == 403
    _login(page, live_daphne, "customer", "customer-pass-123")
    page.goto(f"{live_daphne}/admin/tuning/")
    assert "/admin/login/" in page.url and page.locator("#dashboard").count() == 0
    response = page.goto(f"{live_daphne}/admin/dashboard/data.json")
    assert response is not None and response.status == 403


def test_staff_sees_charts_and_tunes_the_next_answer(
    live_daphne: str,
    answering: None,
    browser_page,  # noqa: ANN001
) -> None:
    from chatbot.models import Message
    from routing.models import EvaluationRun, ModelTier

    OUT.mkdir(exist_ok=True)
    page = browser_page
    _login(page, live_daphne, "boss", "boss-pass-123")
    # Demo data stays out of customers' figures: the admin asks for it, and it is labelled.
    page.goto(f"{live_daphne}/admin/dashboard/?period=30d")
    assert int(page.locator("#card-questions .value").inner_text()) == 0
    with page.expect_navigation():
        page.click("#demo-link")
    assert "demo=1" in page.url
    page.wait_for_selector("#dashboard[data-charts-ready='1']", timeout=20_000)
    for chart in ("chart-cost", "chart-tiers", "chart-cache", "chart-latency"):
        assert page.locator(f"#{chart}").get_attribute("data-drawn") == "1"
    # The cost chart has pixels drawn on it (bars, lines), not a blank canvas.
    painted = page.evaluate(
        """() => { const c = document.getElementById('chart-cost');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }"""
    )
    assert painted > 1000
    assert page.locator("#demo-banner").is_visible()
    questions = int(page.locator("#card-questions .value").inner_text())
    assert questions == Message.objects.filter(role="assistant").count() > 0
    page.screenshot(path=str(OUT / "dashboard.png"), full_page=True)

    run = EvaluationRun.objects.get(name="fixture run")
    page.goto(f"{live_daphne}/admin/evaluations/{run.id}/")
    assert page.locator("table.policy-table tbody tr").count() >= 2
    page.screenshot(path=str(OUT / "evaluation-run.png"), full_page=True)

    page.goto(f"{live_daphne}/admin/tuning/?run={run.id}")
    page.wait_for_selector("#chart-curve[data-drawn='1']", timeout=20_000)
    # Click the "small alone" point (dataset 1 holds each tier alone, cheapest first). The
    # chart may still settle its layout after drawing: read the point's place before each try.
    for _ in range(3):
        x, y = page.evaluate(
            "() => { const p = window.tuningChart.getDatasetMeta(1).data[0]; return [p.x, p.y]; }"
        )
        box = page.locator("#chart-curve").bounding_box()
        page.mouse.click(box["x"] + x, box["y"] + y)
        if "small alone" in page.inner_text("#picked-label"):
            break
        page.wait_for_timeout(500)
    assert "small alone" in page.inner_text("#picked-label")
    assert page.input_value("#apply-tiers") == "small"
    page.screenshot(path=str(OUT / "tuning.png"), full_page=True)
    page.click("#apply-picked")
    page.wait_for_selector("ul.messagelist li.success")
    tiers = {t.name: t for t in ModelTier.objects.all()}
    assert tiers["small"].enabled and tiers["small"].threshold == 0.0
    assert not tiers["medium"].enabled

    # The next customer question follows the new setting: only the small tier answers.
    # Only this customer's answer counts: the seeded demo answers must never be taken for it.
    live = Message.objects.filter(role="assistant").exclude(origin=Message.Origin.DEMO)
    before = live.count()
    page.goto(f"{live_daphne}/")
    page.wait_for_function("document.getElementById('status').textContent.length > 0")
    page.fill("#ask-input", "How long does standard delivery take in the United Kingdom?")
    page.click("#send")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        answer = live.order_by("-id").first()
        if live.count() > before and answer.status != "streaming":
            break
        time.sleep(0.5)
    else:
        pytest.fail("no answer within 120 s")
    page.screenshot(path=str(OUT / "chat-after-tuning.png"))
    connection.close()
    assert answer.tier == "small" and answer.sources and answer.tokens_out > 0
