"""Staff-only admin pages: the cost/accuracy dashboard, its JSON, CSV export, tuning, evaluation runs."""

from __future__ import annotations

import csv
import json
from decimal import Decimal, InvalidOperation
from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from chatbot import evaluations
from chatbot.budget import budget_daily_limit, budget_set_daily_limit
from chatbot.dashboard import Period, answers_in_period, dashboard_data, period_parse
from chatbot.models import Conversation
from chatbot.permissions import (
    EXPORT_ANSWERS,
    RUN_EVALUATION,
    SET_BUDGET,
    TUNE_CASCADE,
    VIEW_DASHBOARD,
    staff_permission_required,
)


def _period(request: HttpRequest) -> Period:
    return period_parse(
        period=request.GET.get("period"),
        start=request.GET.get("start") or None,
        end=request.GET.get("end") or None,
    )


def _demo(request: HttpRequest) -> bool:
    # Demo data is shown only when asked for, and then alone: never mixed into customers' figures.
    return request.GET.get("demo") == "1"


def _channel_rows(channels: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The JSON's per-source figures as table rows, with each source's share of the questions."""
    total = sum(figures["questions"] for figures in channels.values())
    rows = []
    for channel, figures in channels.items():
        label = Conversation.Channel(channel).label
        rows.append(
            {
                **figures,
                "label": label[:1].upper() + label[1:],
                "share": figures["questions"] / total if total else None,
            }
        )
    return rows


def _context(request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
    # The admin's own context (site header, user tools, sidebar) makes these pages look native.
    return {**admin.site.each_context(request), "title": title, **extra}


@staff_permission_required(VIEW_DASHBOARD, write=SET_BUDGET)
@require_http_methods(["GET", "POST"])
def dashboard_page(request: HttpRequest) -> HttpResponse:
    """Cost, savings, cache, tiers, latency, thumbs and accuracy for a period; POST sets the budget."""
    if request.method == "POST":
        raw = request.POST.get("daily_budget_usd", "").strip()
        try:
            amount = Decimal(raw) if raw else None
        except InvalidOperation:
            messages.error(request, f"Not a number: {raw!r}")
        else:
            budget_set_daily_limit(amount=amount)
            limit = budget_daily_limit()
            messages.success(
                request, f"Daily budget set to {limit} USD." if limit else "No daily budget."
            )
        return redirect(f"{reverse('dashboard')}?{request.GET.urlencode()}")
    try:
        period = _period(request)
    except ValueError as exc:
        messages.error(request, str(exc))
        period = period_parse(period="7d")
    demo = _demo(request)
    data = dashboard_data(period=period, demo=demo)
    with_demo, without_demo = request.GET.copy(), request.GET.copy()
    with_demo["demo"] = "1"
    without_demo.pop("demo", None)
    return render(
        request,
        "admin/chatbot/dashboard.html",
        _context(
            request,
            "Cost and accuracy (DEMO data)" if demo else "Cost and accuracy",
            data=data,
            channels=_channel_rows(data["channels"]),
            period=period,
            demo=demo,
            query=request.GET.urlencode(),
            demo_query=with_demo.urlencode(),
            customer_query=without_demo.urlencode(),
            periods=["today", "7d", "30d"],
        ),
    )


@require_GET
@staff_permission_required(VIEW_DASHBOARD, json=True)
def dashboard_json(request: HttpRequest) -> JsonResponse:
    """The dashboard's figures as JSON (?period=today|7d|30d or ?start=&end= ISO dates; ?demo=1)."""
    try:
        period = _period(request)
    except ValueError as exc:
        return JsonResponse({"error": "bad_period", "message": str(exc)}, status=400)
    return JsonResponse(dashboard_data(period=period, demo=_demo(request)))


class _Echo:
    def write(self, value: str) -> str:
        return value


CSV_FIELDS = [
    "id",
    "created_at",
    "conversation_id",
    "origin",
    "status",
    "tier",
    "tier_path",
    "cached",
    "abstained",
    "abstain_reason",
    "tokens_in",
    "tokens_out",
    "cost",
    "cost_estimated",
    "cost_if_largest",
    "baseline_tier",
    "baseline_measured",
    "ttft_ms",
    "total_ms",
    "feedback",
]


@staff_permission_required(EXPORT_ANSWERS)
@require_GET
def dashboard_csv(request: HttpRequest) -> HttpResponse:
    """Customers' answers of a period as CSV (the demo's with ?demo=1): tier path, cost, baseline."""
    try:
        period = _period(request)
    except ValueError as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain")
    writer = csv.writer(_Echo())
    demo = _demo(request)

    def rows() -> Any:
        yield writer.writerow(CSV_FIELDS)
        answers = answers_in_period(period=period, demo=demo).order_by("created_at", "id")
        for m in answers.iterator():
            path = ">".join(
                str(a.get("tier", "")) for a in (m.attempts or []) if isinstance(a, dict)
            )
            yield writer.writerow(
                [
                    m.id,
                    m.created_at.isoformat(),
                    m.conversation_id,
                    m.origin,
                    m.status,
                    m.tier,
                    path,
                    int(m.cached),
                    int(m.abstained),
                    m.abstain_reason,
                    m.tokens_in,
                    m.tokens_out,
                    m.cost,
                    int(m.cost_estimated),
                    m.cost_if_largest,
                    m.baseline_tier,
                    int(m.baseline_measured),
                    "" if m.ttft_ms is None else round(m.ttft_ms, 1),
                    "" if m.total_ms is None else round(m.total_ms, 1),
                    "" if m.feedback is None else m.feedback,
                ]
            )

    response = StreamingHttpResponse(rows(), content_type="text/csv")
    prefix = "demo-answers" if demo else "answers"
    response["Content-Disposition"] = (
        f'attachment; filename="{prefix}-{period.start}-{period.end}.csv"'
    )
    return response


@staff_permission_required(VIEW_DASHBOARD, write=TUNE_CASCADE)
@require_http_methods(["GET", "POST"])
def tuning_page(request: HttpRequest) -> HttpResponse:
    """The cascade's cost-accuracy curve from a stored run; pick or optimise a point and apply it."""
    if request.method == "POST":
        try:
            applied = evaluations.policy_apply_from_post(post=request.POST)
        except ValueError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, applied)
        return redirect(f"{reverse('tuning')}?{request.GET.urlencode()}")
    context = evaluations.tuning_context(params=request.GET)
    return render(
        request,
        "admin/chatbot/tuning.html",
        _context(
            request,
            "Tune the cascade",
            tuning=context,
            tuning_json=json.dumps(context.get("chart")),
        ),
    )


@staff_permission_required(VIEW_DASHBOARD, write=RUN_EVALUATION)
@require_http_methods(["GET", "POST"])
def evaluation_runs_page(request: HttpRequest) -> HttpResponse:
    """Stored evaluation runs; POST uploads a dataset and starts a run in the background."""
    if request.method == "POST":
        try:
            if request.POST.get("dataset") == "labelled":
                note = evaluations.evaluation_start_labelled()
            else:
                note = evaluations.evaluation_start_from_upload(
                    upload=request.FILES.get("questions"),
                    limit=request.POST.get("limit") or None,
                    user=request.user,
                )
        except ValueError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, note)
        return redirect("evaluation-runs")
    return render(
        request,
        "admin/chatbot/evaluation_runs.html",
        _context(
            request,
            "Evaluation runs",
            runs=evaluations.evaluation_runs_list(),
            labelled=evaluations.labelled_count(),
        ),
    )


@staff_permission_required(VIEW_DASHBOARD)
@require_GET
def evaluation_reliability_png(request: HttpRequest, run_id: int) -> HttpResponse:
    """A fitted run's reliability diagram (before and after the fit, test rows), as a PNG."""
    png = evaluations.reliability_diagram(run_id=run_id)
    if png is None:
        return HttpResponse("This run has not been fitted.", status=404, content_type="text/plain")
    return HttpResponse(png, content_type="image/png")


@staff_permission_required(VIEW_DASHBOARD)
@require_GET
def evaluation_run_page(request: HttpRequest, run_id: int) -> HttpResponse:
    """One run: progress, and per tier and per policy F1, abstention, relative cost, latency."""
    run = evaluations.evaluation_run_summary(run_id=run_id)
    if run is None:
        messages.error(request, f"No evaluation run {run_id}.")
        return redirect("evaluation-runs")
    return render(
        request,
        "admin/chatbot/evaluation_run.html",
        _context(request, f"Evaluation run {run_id}", run=run),
    )
