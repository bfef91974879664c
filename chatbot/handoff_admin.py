"""Admin pages for widget sites (where the widget may be embedded, how it looks) and handoffs."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.utils.html import format_html

from chatbot.models import Handoff, WidgetSite
from chatbot.widget import parse_origins
from chatbot.widget_views import COLOUR


class WidgetSiteForm(forms.ModelForm):
    class Meta:
        model = WidgetSite
        fields = [
            "name",
            "key",
            "allowed_origins",
            "greeting",
            "language",
            "primary_color",
            "text_color",
            "enabled",
        ]
        widgets = {
            "primary_color": forms.TextInput(attrs={"type": "color"}),
            "text_color": forms.TextInput(attrs={"type": "color"}),
        }

    def clean_allowed_origins(self) -> str:
        origins = parse_origins(self.cleaned_data["allowed_origins"])
        if not origins:
            raise forms.ValidationError("Give at least one origin the widget may be embedded on.")
        return "\n".join(origins)

    def _colour(self, field: str) -> str:
        value = self.cleaned_data[field]
        if not COLOUR.match(value):
            raise forms.ValidationError("Use a colour like #2f6f4e.")
        return value.lower()

    def clean_primary_color(self) -> str:
        return self._colour("primary_color")

    def clean_text_color(self) -> str:
        return self._colour("text_color")


@admin.register(WidgetSite)
class WidgetSiteAdmin(admin.ModelAdmin):
    form = WidgetSiteForm
    list_display = ("name", "key", "origins", "language", "enabled")
    readonly_fields = ("snippet",)
    prepopulated_fields = {"key": ("name",)}

    @admin.display(description="allowed origins")
    def origins(self, obj: WidgetSite) -> str:
        return ", ".join(obj.allowed_origins.split())

    @admin.display(description="script tag for the site's pages")
    def snippet(self, obj: WidgetSite) -> str:
        if not obj.pk:
            return "Save first."
        return format_html(
            '<code>&lt;script src="https://YOUR-CHAT-HOST/widget.js" data-site="{}" '
            "async&gt;&lt;/script&gt;</code>",
            obj.key,
        )


@admin.register(Handoff)
class HandoffAdmin(admin.ModelAdmin):
    list_display = ("id", "status", "reason", "question", "email", "agent", "created_at")
    list_filter = ("status", "reason", "outside_hours")
    readonly_fields = ("conversation", "created_at", "joined_at", "closed_at")
    search_fields = ("question", "email")
