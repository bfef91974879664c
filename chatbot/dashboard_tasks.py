"""Background work started from the admin: an evaluation run on an uploaded dataset."""

from __future__ import annotations

import io

from django.core.management import call_command
from django_tasks import task


@task()
def evaluation_run_task(*, questions_path: str, limit: int | None = None) -> str:
    """Run `manage.py evaluate` on a stored upload (it stores the run and its rows as it goes)."""
    args = [questions_path]
    options: dict[str, object] = {}
    if limit:
        options["limit"] = limit
    out = io.StringIO()
    call_command("evaluate", *args, stdout=out, **options)
    return out.getvalue()[-2000:]
