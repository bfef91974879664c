from django.apps import AppConfig


class RetrievalConfig(AppConfig):
    name = "retrieval"
    verbose_name = "Knowledge"

    def ready(self) -> None:
        """Connect the deletion receiver that feeds retrieval.signals.document_changed."""
        from retrieval import signals

        signals.connect()
        # The answer cache listens to document_changed (import connects its receiver).
        from retrieval import cache  # noqa: F401
