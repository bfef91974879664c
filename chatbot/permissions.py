"""Who may do what in the admin: roles as Django groups, and one check for every custom page.

Reading figures, tuning the cascade, editing knowledge and answering customers are separate
Django permissions, so a viewer cannot move a threshold and a tuner cannot delete documents.
Superusers hold every permission; everyone else gets what their groups give.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import wraps
from typing import Any

from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse

VIEW_DASHBOARD = "chatbot.view_dashboard"
SET_BUDGET = "chatbot.set_budget"
EXPORT_ANSWERS = "chatbot.view_message"
TUNE_CASCADE = "routing.change_cascadepolicy"
RUN_EVALUATION = "routing.add_evaluationrun"

_VIEW = [
    VIEW_DASHBOARD,
    "chatbot.view_conversation",
    "chatbot.view_message",
    "retrieval.view_knowledgedocument",
    "retrieval.view_chunk",
    "retrieval.view_cacheentry",
    "retrieval.view_curatedanswer",
    "retrieval.view_websource",
    "retrieval.view_webpage",
    "routing.view_modeltier",
    "routing.view_cascadepolicy",
    "routing.view_evaluationrun",
    "routing.view_evaluationresult",
    "routing.view_scorerweightsversion",
    "routing.view_routerlearner",
]

# Group name -> permissions ("app_label.codename"). Kept in step on every migrate.
ROLES: dict[str, list[str]] = {
    "Viewers": _VIEW,
    "Knowledge editors": [
        *_VIEW,
        "retrieval.add_knowledgedocument",
        "retrieval.change_knowledgedocument",
        "retrieval.delete_knowledgedocument",
        "retrieval.add_curatedanswer",
        "retrieval.change_curatedanswer",
        "retrieval.delete_curatedanswer",
        "retrieval.change_cacheentry",
        "retrieval.add_websource",
        "retrieval.change_websource",
        "retrieval.delete_websource",
        "chatbot.review_gaps",
    ],
    "Cascade tuners": [
        *_VIEW,
        TUNE_CASCADE,
        "routing.add_cascadepolicy",
        "routing.change_modeltier",
        RUN_EVALUATION,
        "routing.change_scorerweights",
        "routing.change_routerlearner",
        SET_BUDGET,
    ],
    "Support agents": [
        "chatbot.handle_handoff",
        "chatbot.view_conversation",
        "chatbot.view_message",
    ],
}


def roles_ensure(**kwargs: Any) -> None:
    """Create the role groups and give them exactly their permissions (post_migrate)."""
    from django.contrib.auth.models import Group, Permission

    for name, perms in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        wanted = [_permission(Permission, perm) for perm in perms]
        group.permissions.set([p for p in wanted if p is not None])


def _permission(model: Any, perm: str) -> Any:
    app_label, codename = perm.split(".", 1)
    return model.objects.filter(content_type__app_label=app_label, codename=codename).first()


def _missing(request: HttpRequest, perms: Iterable[str]) -> list[str]:
    return [perm for perm in perms if not request.user.has_perm(perm)]


def staff_permission_required(
    read: str, *, write: str | None = None, json: bool = False
) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Staff holding `read` (and `write` for anything but GET/HEAD); else login or 403.

    Pages send anonymous visitors to the admin login; JSON endpoints answer 403 JSON instead
    (monitoring scripts cannot follow a login form).
    """

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            user = request.user
            if json and not (user.is_authenticated and user.is_active and user.is_staff):
                return JsonResponse(
                    {"error": "staff_only", "message": "Log in as staff."}, status=403
                )
            needed = [read] if request.method in ("GET", "HEAD") else [read, write or read]
            missing = _missing(request, needed)
            if missing:
                message = f"This needs the permission {', '.join(missing)}."
                if json:
                    return JsonResponse({"error": "permission", "message": message}, status=403)
                raise PermissionDenied(message)
            return view(request, *args, **kwargs)

        return wrapper if json else staff_member_required(wrapper)

    return decorate
