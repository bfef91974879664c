from django.contrib import admin, messages
from django.http import HttpRequest

from routing.models import EvaluationResult, EvaluationRun, ModelTier, ScorerWeights


@admin.register(ModelTier)
class ModelTierAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "order",
        "enabled",
        "model",
        "base_url",
        "threshold",
        "price_input_per_mtok",
        "price_output_per_mtok",
        "context_window",
        "key_status",
    )
    list_editable = ("order", "enabled", "threshold")

    @admin.display(description="API key")
    def key_status(self, tier: ModelTier) -> str:
        """Whether the tier's key is available (never the key itself)."""
        if not tier.api_key_env:
            return "not needed"
        return "set" if tier.api_key else f"MISSING: set {tier.api_key_env}"

    def changelist_view(self, request: HttpRequest, extra_context=None):  # noqa: ANN001, ANN201
        """List tiers, warning about enabled tiers the cascade will skip for want of a key."""
        for tier in ModelTier.objects.filter(enabled=True).exclude(api_key_env=""):
            if tier.api_key is None:
                messages.warning(
                    request,
                    f"Tier {tier.name!r} is enabled but the environment variable "
                    f"{tier.api_key_env} is not set: the cascade skips it.",
                )
        return super().changelist_view(request, extra_context)


@admin.register(ScorerWeights)
class ScorerWeightsAdmin(admin.ModelAdmin):
    list_display = ("name", "fitted_on", "updated_at")


@admin.register(EvaluationRun)
class EvaluationRunAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "status", "dataset", "started_at", "finished_at")


@admin.register(EvaluationResult)
class EvaluationResultAdmin(admin.ModelAdmin):
    list_display = ("run", "question_id", "tier", "source", "split", "f1", "score", "abstained")
    list_filter = ("tier", "source", "split", "abstained")
