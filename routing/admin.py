from django.contrib import admin

from routing.models import ModelTier


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
    )
    list_editable = ("order", "enabled", "threshold")
