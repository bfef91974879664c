"""HTTP URL routes."""

from django.contrib import admin
from django.urls import path

from chatbot import views

urlpatterns = [
    path("", views.chat_page, name="chat"),
    path("passages/<int:chunk_id>/", views.passage_page, name="passage"),
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
]
