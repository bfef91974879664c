"""HTTP URL routes."""

from django.contrib import admin
from django.urls import path

from chatbot import api_views, dashboard_views, gaps_views, inbox_views, views, widget_views
from chatbot.i18n_views import ChatCatalog

urlpatterns = [
    path("", views.chat_page, name="chat"),
    path("api/conversations/", views.conversations_json, name="conversations"),
    path(
        "api/conversations/<uuid:conversation_id>/",
        views.conversation_json,
        name="conversation",
    ),
    path(
        "api/conversations/<uuid:conversation_id>/handoff/",
        widget_views.handoff_json,
        name="conversation-handoff",
    ),
    path("passages/<int:chunk_id>/", views.passage_page, name="passage"),
    # chat.js's translations: the browser's language, or a widget site's.
    path("jsi18n/", ChatCatalog.as_view(), name="jsi18n"),
    path("jsi18n/<slug:language>/", ChatCatalog.as_view(), name="jsi18n-language"),
    # The embeddable widget: the loader script, the framed chat and its visitor's API.
    path("widget.js", widget_views.widget_js, name="widget-js"),
    path("widget/<slug:key>/", widget_views.widget_page, name="widget"),
    path(
        "widget/<slug:key>/api/conversations/",
        widget_views.widget_conversations_json,
        name="widget-conversations",
    ),
    path(
        "widget/<slug:key>/api/conversations/<uuid:conversation_id>/",
        widget_views.widget_conversation_json,
        name="widget-conversation",
    ),
    path(
        "widget/<slug:key>/api/conversations/<uuid:conversation_id>/handoff/",
        widget_views.widget_handoff_json,
        name="widget-conversation-handoff",
    ),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", views.metrics_page, name="metrics"),
    # The OpenAI-compatible API (bearer keys; base URL http://host/v1).
    path("v1/chat/completions", api_views.chat_completions_view, name="api-chat-completions"),
    path("v1/models", api_views.models_view, name="api-models"),
    path("v1/models/<str:model>", api_views.model_view, name="api-model"),
    # Admin dashboard, tuning and evaluation pages (staff only; before admin/ so they win).
    path("admin/dashboard/", dashboard_views.dashboard_page, name="dashboard"),
    path("admin/dashboard/data.json", dashboard_views.dashboard_json, name="dashboard-data"),
    path("admin/dashboard/export.csv", dashboard_views.dashboard_csv, name="dashboard-export"),
    path("admin/tuning/", dashboard_views.tuning_page, name="tuning"),
    path("admin/inbox/", inbox_views.inbox_page, name="inbox"),
    path("admin/evaluations/", dashboard_views.evaluation_runs_page, name="evaluation-runs"),
    path(
        "admin/evaluations/<int:run_id>/",
        dashboard_views.evaluation_run_page,
        name="evaluation-run",
    ),
    path(
        "admin/evaluations/<int:run_id>/reliability.png",
        dashboard_views.evaluation_reliability_png,
        name="evaluation-reliability",
    ),
    path("admin/gaps/", gaps_views.gaps_page, name="gaps"),
    path("admin/gaps/curate/", gaps_views.gap_curate_page, name="gap-curate"),
    path("admin/gaps/curated/", gaps_views.gap_curated_list_page, name="gap-curated-list"),
    path("admin/gaps/curated/<int:curated_id>/", gaps_views.gap_curated_page, name="gap-curated"),
    path("admin/", admin.site.urls),
]
