"""A citation of a web page opens the live page at its section; a file's, the passage page."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async

from chatbot.pipeline import passage_source, retrieve
from retrieval.services import document_ingest_text
from retrieval.web_tasks import web_source_add, web_source_sync
from tests.retrieval.test_web import RETURNS, Route, SiteServer


@pytest.fixture
def site() -> Any:
    server = SiteServer()
    yield server
    server.stop()


@pytest.mark.django_db(transaction=True)
async def test_sources_link_web_pages_live_and_files_to_the_passage_page(
    site: SiteServer, settings: Any
) -> None:
    settings.WEB_ALLOW_PRIVATE_ADDRESSES = True  # the test site lives on loopback
    site.routes["/returns"] = Route(RETURNS)
    await sync_to_async(web_source_sync)(
        source=await sync_to_async(web_source_add)(url=site.url("/returns")), inline=True
    )
    await sync_to_async(document_ingest_text)(
        source_name="gift-cards.md",
        title="Gift cards",
        text="# Gift cards\n\nGift cards never expire and can be used for returns of food too.",
    )
    passages = await retrieve(question="Can I return gift cards or perishable food?")
    web = [passage_source(1, p)["url"] for p in passages if p.title == "Returns policy"]
    assert web and all(url.startswith(site.url("/returns")) for url in web)
    section = [
        passage_source(1, p)["url"]
        for p in passages
        if "Gift cards" in p.text and p.title != "Gift cards"
    ]
    assert section == [site.url("/returns") + "#exceptions"]
    files = [passage_source(1, p) for p in passages if p.title == "Gift cards"]
    assert files and files[0]["url"] == f"/passages/{files[0]['chunk_id']}/"
