"""Conversations and messages, with each answer's provenance, usage and cost."""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.conf import settings
from django.db import models
from pgvector.django import VectorField


class Conversation(models.Model):
    """A chat thread owned by one browser session."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session_key = models.CharField(max_length=64, db_index=True)
    title = models.CharField(max_length=200, blank=True)
    # The embedding website when the conversation started in its widget (blank: the chat page).
    site = models.ForeignKey(
        "WidgetSite",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="conversations",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Channel(models.TextChoices):
        CHAT = "chat", "chat"  # the chat page and the widget (a browser's socket)
        API = "api", "API"  # the OpenAI-compatible HTTP API (chatbot/api_views.py)

    # Where the conversation came from: the dashboard counts each source on its own.
    channel = models.CharField(
        max_length=8, choices=Channel.choices, default=Channel.CHAT, db_index=True
    )
    # The API key that asked (API conversations only): its daily cost cap counts these answers.
    api_key = models.ForeignKey(
        "ApiKey",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="conversations",
    )

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return self.title or str(self.id)


class Message(models.Model):
    """One turn. User turns are stored before any model work; assistant turns carry provenance."""

    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"
        AGENT = "agent"  # a person answering during a handoff (chatbot.Handoff)

    class Status(models.TextChoices):
        COMPLETE = "complete"
        STREAMING = "streaming"
        STOPPED = "stopped"  # the customer pressed Stop
        INTERRUPTED = "interrupted"  # the socket dropped or the provider broke mid-answer
        ERROR = "error"  # no answer could be produced

    class Origin(models.TextChoices):
        # Only customers' answers enter the dashboard's figures and the daily budget.
        CUSTOMER = "customer"
        EVALUATION = "evaluation"
        DEMO = "demo"

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    role = models.CharField(max_length=10, choices=Role.choices)
    content = models.TextField()
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.COMPLETE)
    standalone_question = models.TextField(blank=True)
    # The standalone question's detected language (ISO 639-1; "" when not sure): the answer is
    # asked in it, and the answer cache is used only where its guard reads that language.
    language = models.CharField(max_length=8, blank=True)
    sources = models.JSONField(default=list, blank=True)
    tier = models.CharField(max_length=40, blank=True)
    attempts = models.JSONField(default=list, blank=True)
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=14, decimal_places=10, default=Decimal("0"))
    # What the baseline (the dearest tier that could really answer, `baseline_tier`) would
    # have cost for this question: its own answer call when it ran (`baseline_measured`), else
    # its prices on the answer call's tokens. For a cache hit or a decline before any model ran
    # it is what was avoided (always an estimate).
    cost_if_largest = models.DecimalField(max_digits=14, decimal_places=10, default=Decimal("0"))
    baseline_tier = models.CharField(max_length=40, blank=True)
    baseline_measured = models.BooleanField(default=False)
    # True when some of `cost` was counted here because the server reported no usage (a stop
    # or a broken stream mid-answer), not billed from the server's own figures.
    cost_estimated = models.BooleanField(default=False)
    origin = models.CharField(
        max_length=12, choices=Origin.choices, default=Origin.CUSTOMER, db_index=True
    )
    # The follow-up rewrite's call (tier, tokens_in, tokens_out, cost), when one ran; its cost
    # is included in `cost`.
    rewrite = models.JSONField(null=True, blank=True)
    cached = models.BooleanField(default=False)
    cache_similarity = models.FloatField(null=True, blank=True)
    abstained = models.BooleanField(default=False)
    # no_passages (declined before any model), low_score, dont_know, no_answer
    abstain_reason = models.CharField(max_length=20, blank=True)
    ttft_ms = models.FloatField(null=True, blank=True)
    total_ms = models.FloatField(null=True, blank=True)
    feedback = models.SmallIntegerField(null=True, blank=True, choices=[(1, "up"), (-1, "down")])
    error_code = models.CharField(max_length=40, blank=True)
    # The browser's id for a user message: a resend after a reconnect is recognised, not re-asked.
    client_id = models.CharField(max_length=64, blank=True, db_index=True)
    # Who wrote an agent turn (blank for the customer's and the bot's own turns).
    agent = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class FeedbackReason(models.TextChoices):
        WRONG = "wrong", "wrong"
        OUTDATED = "outdated", "outdated"
        NOT_ASKED = "not_asked", "not what I asked"
        INCOMPLETE = "incomplete", "incomplete"

    class Label(models.TextChoices):
        RIGHT = "right"
        WRONG = "wrong"

    # The customer's optional reason for a thumbs-down (the gap inbox shows it).
    feedback_reason = models.CharField(max_length=12, blank=True, choices=FeedbackReason.choices)
    # An admin's verdict in the message explorer: labelled answers are the shop's own evaluation
    # set (`manage.py evaluate --labelled`), so thresholds are tuned on its real questions.
    label = models.CharField(max_length=8, blank=True, choices=Label.choices)
    label_answer = models.TextField(
        blank=True,
        help_text="The right answer (for a wrong one; blank there means the bot should have "
        "said it does not know).",
    )
    labelled_at = models.DateTimeField(null=True, blank=True)
    # The gap inbox (chatbot/gaps.py): the question's vector, stored the first time the inbox
    # sees it so grouping never embeds a question twice, and whether an admin closed it.
    question_embedding = VectorField(
        dimensions=settings.EMBEDDING_DIMENSIONS, null=True, blank=True
    )
    gap_closed = models.CharField(max_length=10, blank=True)  # dismissed | curated
    gap_closed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["created_at", "id"]
        permissions = [
            ("review_gaps", "Can review knowledge gaps and write curated answers"),
            ("view_dashboard", "Can view the dashboard, tuning curves and evaluation runs"),
            ("set_budget", "Can set the daily budget"),
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:60]}"


class BudgetSetting(models.Model):
    """The admin's override of the daily spending cap (one row; blank falls back to DAILY_BUDGET_USD)."""

    daily_budget_usd = models.DecimalField(
        max_digits=12,
        decimal_places=4,
        null=True,
        blank=True,
        help_text="Daily spend after which tiers above the best affordable one are skipped. "
        "Blank: the DAILY_BUDGET_USD setting; 0 or less: no cap.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "budget setting"

    def __str__(self) -> str:
        return f"daily budget {self.daily_budget_usd}"


class BudgetReservation(models.Model):
    """Money held for one answer in flight, so concurrent questions cannot overspend the day.

    Made by `budget_reserve` before any model runs, deleted by `budget_settle` in the same
    transaction that stores the answer's paid cost. A reservation older than the stale age no
    longer counts: a crashed process must not hold the budget forever.
    """

    message = models.OneToOneField(
        Message, on_delete=models.CASCADE, related_name="budget_reservation"
    )
    amount = models.DecimalField(max_digits=14, decimal_places=10)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    def __str__(self) -> str:
        return f"{self.amount} held for message {self.message_id}"


class WidgetSite(models.Model):
    """A website that embeds the chat widget: where it may be framed from and how it looks."""

    class Language(models.TextChoices):
        ENGLISH = "en", "English"
        GERMAN = "de", "Deutsch"
        FRENCH = "fr", "Français"

    name = models.CharField(max_length=100)
    # The public key in the host page's script tag (data-site); not a secret.
    key = models.SlugField(max_length=40, unique=True)
    allowed_origins = models.TextField(
        help_text="One origin a line, e.g. https://www.example.com (scheme, host, optional port). "
        "Only pages on these origins may frame the widget and open its socket."
    )
    greeting = models.CharField(max_length=300, blank=True)
    language = models.CharField(max_length=5, choices=Language.choices, default=Language.ENGLISH)
    primary_color = models.CharField(max_length=7, default="#2f6f4e")
    text_color = models.CharField(max_length=7, default="#ffffff")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Handoff(models.Model):
    """A customer's request for a person: waiting for an agent, held by one, or closed.

    While a handoff is waiting or joined the bot stays silent in its conversation; the customer's
    messages go to the agent instead. At most one open handoff per conversation.
    """

    class Status(models.TextChoices):
        WAITING = "waiting"
        JOINED = "joined"
        CLOSED = "closed"

    class Reason(models.TextChoices):
        ASKED = "asked"  # the button, or "can I talk to a human?" in the text
        DECLINED = "declined"  # accepted after the bot abstained
        THUMBS_DOWN = "thumbs_down"  # accepted after a thumbs-down

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="handoffs"
    )
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.WAITING, db_index=True
    )
    reason = models.CharField(max_length=12, choices=Reason.choices, default=Reason.ASKED)
    # The standalone question (the follow-up rewrite's output) the bot could not settle.
    question = models.TextField(blank=True)
    email = models.EmailField(blank=True)
    # Asked outside SUPPORT_HOURS: the customer was told when to expect a reply.
    outside_hours = models.BooleanField(default=False)
    agent = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="handoffs",
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    joined_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("handle_handoff", "Can take and answer handoffs in the inbox")]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation"],
                condition=models.Q(status__in=["waiting", "joined"]),
                name="one_open_handoff_per_conversation",
            )
        ]

    def __str__(self) -> str:
        return f"handoff {self.id} ({self.status})"


class ApiKey(models.Model):
    """A client program's key to the OpenAI-compatible API: stored as a SHA-256 hash only.

    The key itself is shown once when it is made (`api_key_create`); `prefix` is its start, kept
    so an admin can tell keys apart. A revoked key is refused at once and kept for the books.
    """

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, editable=False)
    hashed_key = models.CharField(max_length=64, unique=True, editable=False)
    rate_limit_per_minute = models.PositiveIntegerField(
        default=60, help_text="Chat completions this key may ask for in a minute."
    )
    daily_cost_cap_usd = models.DecimalField(
        max_digits=12,
        decimal_places=4,
        null=True,
        blank=True,
        help_text="What this key's answers may cost in a day (USD); blank: no cap of its own "
        "(the shop's daily budget still applies).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name", "id"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def revoked(self) -> bool:
        """True once revoked: the key is refused."""
        return self.revoked_at is not None
