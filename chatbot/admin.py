from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from chatbot import handoff_admin  # noqa: F401 - registers widget sites and handoffs
from chatbot.api_keys import api_key_revoke, api_key_set, key_new
from chatbot.budget import budget_key_committed_today
from chatbot.dashboard_admin import CostFilter, MessageExplorerMixin, TierFilter
from chatbot.evaluation.labelled import LABEL_FIELDS, message_label, messages_label
from chatbot.models import ApiKey, Conversation, Message


class MessageInline(admin.TabularInline):
    model = Message
    extra = 0
    fields = ("role", "content", "status", "tier", "cost", "cached", "abstained", "feedback")
    readonly_fields = fields
    can_delete = False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    # No session_key: it is the customer's login cookie (anyone who reads it can act as them).
    list_display = ("title", "created_at", "updated_at")
    exclude = ("session_key",)
    inlines = [MessageInline]


@admin.register(Message)
class MessageAdmin(MessageExplorerMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "role",
        "short",
        "status",
        "tier",
        "cached",
        "abstained",
        "cost",
        "ttft_ms",
        "feedback",
        "label",
        "created_at",
    )
    list_filter = (
        "role",
        "status",
        TierFilter,
        "cached",
        "abstained",
        "feedback",
        "feedback_reason",
        "label",
        CostFilter,
    )
    search_fields = ("content", "standalone_question")
    # A filtered or searched list counts its own matches only, not the whole table again.
    show_full_result_count = False
    # Labels are the one thing edited here: right or wrong, and the right answer (an evaluation set).
    fieldsets = (
        *MessageExplorerMixin.fieldsets,
        ("Label", {"fields": ("feedback_reason", "label", "label_answer", "labelled_at")}),
    )
    actions = ["label_right", "label_wrong"]

    def get_readonly_fields(self, request: HttpRequest, obj: Message | None = None) -> list[str]:
        """Everything but an answer's label stays read-only."""
        fields = super().get_readonly_fields(request, obj)
        if obj is not None and obj.role == Message.Role.ASSISTANT:
            return [f for f in fields if f not in LABEL_FIELDS]
        return fields

    def save_model(self, request: HttpRequest, obj: Message, form: Any, change: bool) -> None:
        """Only the label is written (the answer's stored history is never re-saved)."""
        message_label(message=obj, label=obj.label, right_answer=obj.label_answer)

    @admin.action(description="Label the chosen answers right", permissions=["change"])
    def label_right(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        n = messages_label(queryset=queryset, label=Message.Label.RIGHT)
        self.message_user(request, f"{n} answers labelled right.")

    @admin.action(
        description="Label the chosen answers wrong (no right answer given)", permissions=["change"]
    )
    def label_wrong(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        n = messages_label(queryset=queryset, label=Message.Label.WRONG)
        self.message_user(request, f"{n} answers labelled wrong.")

    @admin.display(description="content")
    def short(self, obj: Message) -> str:
        return obj.content[:80]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys for the OpenAI-compatible API: made here (the key is shown once), revoked here."""

    list_display = ("name", "prefix", "rate_limit_per_minute", "daily_cost_cap_usd", "created_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter),)
    search_fields = ("name", "prefix")
    fields = ("name", "prefix", "rate_limit_per_minute", "daily_cost_cap_usd", "created_at")
    readonly_fields = ("prefix", "created_at", "revoked_at", "spent_today")
    actions = ["revoke"]

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        """A new key has no prefix or dates yet; a stored one shows whether it was revoked."""
        if obj is None:
            return ["name", "rate_limit_per_minute", "daily_cost_cap_usd"]
        return [*self.fields, "spent_today", "revoked_at"]

    @admin.display(description="spent today (USD, answers in flight included)")
    def spent_today(self, obj: ApiKey) -> str:
        return f"{budget_key_committed_today(api_key_id=obj.id):.6f}"

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        """A new row gets a fresh key; only its hash and prefix are stored."""
        if not change:
            # Kept on this instance only, for the page response_add shows next.
            obj.shown_once = key_new()  # type: ignore[attr-defined]
            api_key_set(api_key=obj, key=obj.shown_once)  # type: ignore[attr-defined]
        super().save_model(request, obj, form, change)

    def response_add(self, request: HttpRequest, obj: ApiKey, post_url_continue: Any = None) -> Any:
        """The key, this once, on a page of its own (never in a message or the session)."""
        return TemplateResponse(
            request,
            "admin/chatbot/apikey/created.html",
            {
                **self.admin_site.each_context(request),
                "api_key": obj,
                "key": obj.shown_once,  # type: ignore[attr-defined]
                "base_url": request.build_absolute_uri("/v1"),
                "title": f"API key for {obj.name}",
            },
        )

    @admin.action(description="Revoke the chosen keys (refused at once)", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        keys = [api_key_revoke(api_key=k) for k in queryset.filter(revoked_at__isnull=True)]
        self.message_user(request, f"{len(keys)} keys revoked.")
