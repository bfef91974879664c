"""HTTP URL routes."""

from django.contrib import admin
from django.urls import path

from chatbot import dashboard_views, views

urlpatterns = [
    path("", views.chat_page, name="chat"),
    path("api/conversations/", views.conversations_json, name="conversations"),
    path(
        "api/conversations/<uuid:conversation_id>/",
        views.conversation_json,
        name="conversation",
    ),
    path("passages/<int:chunk_id>/", views.passage_page, name="passage"),
    path("healthz", views.healthz, name="healthz"),
    # Admin dashboard, tuning and evaluation pages (staff only; before admin/ so they win).
    path("admin/dashboard/", dashboard_views.dashboard_page, name="dashboard"),
    path("admin/dashboard/data.json", dashboard_views.dashboard_json, name="dashboard-data"),
    path("admin/dashboard/export.csv", dashboard_views.dashboard_csv, name="dashboard-export"),
    path("admin/tuning/", dashboard_views.tuning_page, name="tuning"),
    path("admin/evaluations/", dashboard_views.evaluation_runs_page, name="evaluation-runs"),
    path(
        "admin/evaluations/<int:run_id>/",
        dashboard_views.evaluation_run_page,
        name="evaluation-run",
    ),
    path("admin/", admin.site.urls),
]
