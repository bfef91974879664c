"""Message explorer pieces for the admin: cost and tier filters and a read-only provenance page."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from chatbot.models import Message
from routing.models import ModelTier


class CostFilter(admin.SimpleListFilter):
    """Filter answers by what they cost."""

    title = "cost"
    parameter_name = "cost"
    BANDS = {
        "free": ("free (0)", None, Decimal("0")),
        "low": ("under $0.0001", Decimal("0"), Decimal("0.0001")),
        "mid": ("$0.0001 – $0.001", Decimal("0.0001"), Decimal("0.001")),
        "high": ("$0.001 and more", Decimal("0.001"), None),
    }

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        """The cost bands offered in the sidebar."""
        return [(key, band[0]) for key, band in self.BANDS.items()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Message]) -> QuerySet[Message]:
        """Messages whose cost falls in the chosen band."""
        band = self.BANDS.get(self.value() or "")
        if band is None:
            return queryset
        _, low, high = band
        if low is None:
            return queryset.filter(cost=high)
        queryset = queryset.filter(cost__gt=low) if low == 0 else queryset.filter(cost__gte=low)
        return queryset if high is None else queryset.filter(cost__lt=high)


class TierFilter(admin.SimpleListFilter):
    """Filter messages by the tier that answered, offered from the configured tiers: Django's
    own field filter lists the distinct values of every stored message, a pass over the whole
    table on each list view (about 50 ms at 200,000 messages)."""

    title = "tier"
    parameter_name = "tier"
    NO_MODEL = "-"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        """Every configured tier, cheapest first, and messages no model answered."""
        names = ModelTier.objects.order_by("order", "name").values_list("name", flat=True)
        return [(name, name) for name in names] + [
            (self.NO_MODEL, "no model (cache hits, declines, questions, agents)")
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Message]) -> QuerySet[Message]:
        """Messages of the chosen tier."""
        value = self.value()
        if not value:
            return queryset
        return queryset.filter(tier="" if value == self.NO_MODEL else value)


class MessageExplorerMixin:
    """A message's page: the question, its standalone rewrite, the passages, every attempt."""

    fieldsets = (
        (None, {"fields": ("conversation", "role", "origin", "status", "content")}),
        ("Question", {"fields": ("question_asked", "standalone_question")}),
        (
            "Provenance",
            {
                "fields": (
                    "tier",
                    "cached",
                    "cache_similarity",
                    "abstained",
                    "abstain_reason",
                    "passages_table",
                    "attempts_table",
                )
            },
        ),
        (
            "Usage, cost and time",
            {
                "fields": (
                    "tokens_in",
                    "tokens_out",
                    "cost",
                    "cost_estimated",
                    "cost_if_largest",
                    "baseline_tier",
                    "baseline_measured",
                    "ttft_ms",
                    "total_ms",
                    "feedback",
                    "error_code",
                    "created_at",
                )
            },
        ),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Message | None = None) -> list[str]:
        """Stored history is read-only: every field is shown, none edited."""
        return [f for _, options in self.fieldsets for f in options["fields"]]

    @admin.display(description="question asked")
    def question_asked(self, obj: Message) -> str:
        """The customer's message this answer replied to."""
        if obj.role == Message.Role.USER:
            return obj.content
        previous = (
            Message.objects.filter(
                conversation_id=obj.conversation_id, role=Message.Role.USER, id__lt=obj.id
            )
            .order_by("-id")
            .first()
        )
        return previous.content if previous else "–"

    @admin.display(description="passages")
    def passages_table(self, obj: Message) -> str:
        """The numbered passages the answer was grounded in, with their similarity."""
        rows = [s for s in obj.sources or [] if isinstance(s, dict)]
        if not rows:
            return "–"
        body = format_html_join(
            "",
            '<tr><td>[{}]</td><td><a href="{}">{}</a></td><td>{}</td><td>{}</td></tr>',
            (
                (
                    s.get("n", ""),
                    s.get("url", "#"),
                    s.get("title", ""),
                    s.get("heading", ""),
                    s.get("similarity", ""),
                )
                for s in rows
            ),
        )
        return format_html(
            "<table><tr><th>n</th><th>document</th><th>heading</th><th>similarity</th></tr>{}</table>",
            body,
        )

    @admin.display(description="attempts")
    def attempts_table(self, obj: Message) -> str:
        """Each tier tried: score, tokens, cost, latency and what became of its answer."""
        rows = [a for a in obj.attempts or [] if isinstance(a, dict)]
        if not rows:
            return "–"
        body = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    a.get("tier", ""),
                    a.get("score", ""),
                    a.get("tokens_in", ""),
                    a.get("tokens_out", ""),
                    a.get("cost", ""),
                    a.get("latency_ms", ""),
                    a.get("outcome", ""),
                )
                for a in rows
            ),
        )
        return format_html(
            "<table><tr><th>tier</th><th>score</th><th>tokens in</th><th>tokens out</th>"
            "<th>cost</th><th>latency ms</th><th>outcome</th></tr>{}</table>",
            body,
        )
