"""Production settings, headers, the socket's origin check, admin login throttling, the demo
admin's password and what the admin shows of customers' sessions."""

from __future__ import annotations

import io
import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.core.management import call_command

ROOT = Path(__file__).resolve().parents[2]

PRODUCTION_ENV = {
    "DJANGO_DEBUG": "0",
    "DJANGO_ALLOWED_HOSTS": "chat.example.com",
    "DJANGO_CSRF_TRUSTED_ORIGINS": "https://chat.example.com",
    "DJANGO_HTTPS": "1",
    "DJANGO_PROXY_SSL_HEADER": "X-Forwarded-Proto=https",
    "DJANGO_HSTS_PRELOAD": "1",
    # The checks never connect: any well-formed URL keeps the embedded server from starting.
    "DATABASE_URL": "postgresql://chatbot@db.invalid/chatbot",
}


def _check_deploy(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SECRET_KEY": secrets.token_urlsafe(50), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_passes_under_the_production_environment() -> None:
    result = _check_deploy(**PRODUCTION_ENV)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hsts_preload_is_a_choice_the_check_reminds_of() -> None:
    result = _check_deploy(**{**PRODUCTION_ENV, "DJANGO_HSTS_PRELOAD": "0"})
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "security.W021" in output
    assert "security.W004" not in output


def test_check_deploy_fails_without_https_settings() -> None:
    result = _check_deploy(**{**PRODUCTION_ENV, "DJANGO_HTTPS": "0"})
    assert result.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stdout + result.stderr


@pytest.mark.django_db
def test_pages_carry_a_content_security_policy_without_inline_scripts(client) -> None:  # noqa: ANN001
    response = client.get("/")
    assert response.status_code == 200
    policy = response["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";") if part.strip())
    assert directives["script-src"] == "'self'"
    assert directives["object-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    body = response.content.decode()
    # Every <script> of the chat page loads a file: an inline one would be blocked.
    assert body.count("<script") == body.count("<script src=")


async def _socket_accepted(headers: list[tuple[bytes, bytes]]) -> bool:
    from chatbot.asgi import application

    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    connected, _ = await communicator.connect()
    await communicator.disconnect()
    return connected


@pytest.mark.django_db(transaction=True)
async def test_the_socket_origin_must_be_the_page_s_own_host_and_port() -> None:
    host = [(b"host", b"127.0.0.1:8000")]
    assert await _socket_accepted([*host, (b"origin", b"http://127.0.0.1:8000")])
    # Same allowed host name, another port: another site (any app on localhost).
    assert not await _socket_accepted([*host, (b"origin", b"http://127.0.0.1:9999")])
    assert not await _socket_accepted([*host, (b"origin", b"http://localhost:9999")])
    assert not await _socket_accepted([*host, (b"origin", b"http://evil.example:8000")])
    assert not await _socket_accepted(host)
    # Behind a TLS proxy the Host header names no port: the default HTTPS port is expected.
    proxied = [(b"host", b"localhost")]
    assert await _socket_accepted([*proxied, (b"origin", b"https://localhost")])
    assert not await _socket_accepted([*proxied, (b"origin", b"https://localhost:8443")])


@pytest.mark.django_db
def test_admin_logins_are_throttled_per_address_and_user_name(client, settings) -> None:  # noqa: ANN001
    get_user_model().objects.create_superuser("boss", "boss@example.invalid", "right-pass-123")
    limit = settings.AXES_FAILURE_LIMIT
    attacker = {"REMOTE_ADDR": "203.0.113.9"}
    for attempt in range(1, limit + 1):
        response = client.post(
            "/admin/login/", {"username": "boss", "password": "wrong"}, **attacker
        )
        # The form again with an error, until the limit's failure locks the pair out.
        assert response.status_code == (429 if attempt == limit else 200)
    # Locked out now: even the right password is refused, and no session is opened.
    response = client.post(
        "/admin/login/", {"username": "boss", "password": "right-pass-123"}, **attacker
    )
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
    # The owner, from another address, still gets in.
    other = type(client)()
    response = other.post(
        "/admin/login/",
        {"username": "boss", "password": "right-pass-123"},
        REMOTE_ADDR="198.51.100.7",
    )
    assert response.status_code == 302
    assert "_auth_user_id" in other.session


@pytest.mark.django_db
def test_the_demo_admin_password_is_never_printed(settings, tmp_path, monkeypatch, client) -> None:  # noqa: ANN001
    settings.VAR_DIR = tmp_path
    monkeypatch.delenv("DEMO_ADMIN_PASSWORD", raising=False)
    out = io.StringIO()
    call_command("setup_demo", "--no-knowledge", "--no-demo-traffic", stdout=out)
    path = tmp_path / "demo_admin_password"
    password = path.read_text().strip()
    assert len(password) >= 12
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert password not in out.getvalue()
    assert str(path) in out.getvalue()
    response = client.post(
        "/admin/login/", {"username": "admin", "password": password}, REMOTE_ADDR="127.0.0.1"
    )
    assert response.status_code == 302


@pytest.mark.django_db
def test_the_demo_admin_password_can_come_from_the_environment(
    settings, tmp_path, monkeypatch
) -> None:  # noqa: ANN001
    settings.VAR_DIR = tmp_path
    monkeypatch.setenv("DEMO_ADMIN_PASSWORD", "from-the-env-4711")
    out = io.StringIO()
    call_command("setup_demo", "--no-knowledge", "--no-demo-traffic", stdout=out)
    assert not (tmp_path / "demo_admin_password").exists()
    assert "from-the-env-4711" not in out.getvalue()
    assert get_user_model().objects.get(username="admin").check_password("from-the-env-4711")


@pytest.mark.django_db
def test_the_admin_never_shows_a_customer_s_session_key(admin_client) -> None:  # noqa: ANN001
    from chatbot.models import Conversation

    conversation = Conversation.objects.create(
        session_key="customersessionkey0123456789abcd", title="Where is my parcel?"
    )
    for url in (
        "/admin/chatbot/conversation/",
        f"/admin/chatbot/conversation/{conversation.id}/change/",
    ):
        response = admin_client.get(url)
        assert response.status_code == 200
        assert b"Where is my parcel?" in response.content
        assert b"customersessionkey0123456789abcd" not in response.content
