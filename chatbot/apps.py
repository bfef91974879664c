from django.apps import AppConfig
from django.db.models.signals import post_migrate


class ChatbotConfig(AppConfig):
    name = "chatbot"
    verbose_name = "Chat"

    def ready(self) -> None:
        from chatbot.permissions import roles_ensure

        # After every app's permissions exist (Django creates them in its own post_migrate).
        post_migrate.connect(roles_ensure, dispatch_uid="chatbot.roles_ensure")
