from django.contrib import admin

from chatbot import handoff_admin  # noqa: F401 - registers widget sites and handoffs
from chatbot.dashboard_admin import CostFilter, MessageExplorerMixin
from chatbot.models import Conversation, Message


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
        "created_at",
    )
    list_filter = ("role", "status", "tier", "cached", "abstained", "feedback", CostFilter)
    search_fields = ("content", "standalone_question")

    @admin.display(description="content")
    def short(self, obj: Message) -> str:
        return obj.content[:80]
