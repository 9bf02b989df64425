"""The ops console's Starlette app: sign-in, the panels' pages, and the role-gated dead-letter replay.

Authentication: `Authorization: Bearer <token>` or the cookie the sign-in form sets (HttpOnly,
SameSite=Strict, so no other site can post with it). No valid token: 401 (the sign-in page). A role
without `replay` (schemas/access/operations.yaml) that posts a replay: 403, and the refusal is in the
audit log (tools.job_control.authorize). Sign-ins and every replay are audited; a replay whose audit
entry cannot be written does not happen (503). Reads run in Starlette's thread pool, one back end at a
time; a back end that fails is a panel saying so (panels.py), never a 500.
"""

from __future__ import annotations

import argparse
import io
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from connectors.audit import AuditEvent
from tools.ops_console import pages
from tools.ops_console.auth import Principal, Tokens
from tools.ops_console.panels import (
    Prometheus,
    Recent,
    audit_panel,
    dashboard_panels,
    dead_letters_panel,
    guarded,
    jobs_panel,
    lineage_panel,
    prometheus_panels,
    recent_audit_panel,
)

COOKIE = "medistream_ops"
MAX_FORM_BYTES = 4096
_NAME = re.compile(r"[a-z0-9_]{1,80}")
_REASON = re.compile(r"[a-z0-9_]{1,60}(?:\.[a-z0-9_]{1,60})?")
HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                                      "frame-ancestors 'none'",
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin", "Cache-Control": "no-store"}


@dataclass(frozen=True)
class Sources:
    """Where the console reads and writes; factories are called per request (each back end may come and go)."""

    tokens: Tokens
    backend: Callable[[], Any]  # the `medistream jobs` back end (tools.job_control.backend_for("local"))
    dlq_config: Callable[[], Any]  # tools.dlq_units.DlqConfig
    prometheus: Prometheus
    audit: Callable[[], Any]  # connectors.audit.AuditLog
    replay: Callable[[Any, argparse.Namespace, io.StringIO], int]  # tools.dlq.replay: `medistream dlq replay`
    lineage_url: str | None = None  # the OpenLineage store (`lineage.url`); None: lineage is off


def _html(text: str, status: int = 200, **headers: str) -> HTMLResponse:
    return HTMLResponse(text, status, headers={**HEADERS, **headers})


def _unauthorized() -> HTMLResponse:
    return _html(pages.login_page(), 401, **{"WWW-Authenticate": 'Bearer realm="medistream ops"'})


def _token(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else request.cookies.get(COOKIE)


def _audit(sources: Sources, who: Principal, action: str, decision: str, reason: str) -> None:
    from tools.job_control import PURPOSE

    sources.audit().append(AuditEvent(actor=who.user, role=who.role, purpose=PURPOSE, action=action,
                                      decision=decision, feed=None, record_id=None, fields=(), reason=reason))


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    return {k: v[0] for k, v in urllib.parse.parse_qs(body.decode("utf-8", "replace")).items()}


def _same_origin(request: Request) -> bool:
    """A browser's cross-site post names another origin (the cookie is SameSite=Strict too).

    Referrer-Policy is same-origin, not no-referrer: under no-referrer Chrome sends `Origin: null` with
    every form post, its own included, which this check would refuse.
    """
    origin = request.headers.get("origin")
    return origin is None or urllib.parse.urlsplit(origin).netloc == request.headers.get("host")


def build_app(sources: Sources) -> Starlette:
    """The console over `sources`."""

    dead_letters = Recent(lambda: guarded("Dead letters", "Kafka", lambda: dead_letters_panel(sources.dlq_config())))

    def panels_for(path: str, dataset: str | None = None) -> list[str]:
        want = {"/": ("jobs", "dlq", "prom", "audit"), "/jobs": ("jobs",), "/dead-letters": ("dlq",),
                "/feeds": ("prom",), "/dashboards": ("dashboards",), "/lineage": ("lineage",),
                "/audit": ("audit",)}[path]
        html: list[str] = []
        if "lineage" in want:
            html.append(pages.lineage_form(dataset))
            lineage = guarded("Lineage", "the lineage store", lambda: lineage_panel(sources.lineage_url, dataset))
            html.append(pages.panel(lineage, pages.LINEAGE_COLUMNS, empty="no job has sent a lineage event"))
        if "jobs" in want:
            html.append(pages.panel(guarded("Jobs", "Flink cluster", lambda: jobs_panel(sources.backend())),
                                    pages.JOB_COLUMNS))
        if "dlq" in want:
            dlq = dead_letters.get()
            html.append(pages.panel(dlq, pages.DLQ_COLUMNS, pages.replay_form, "no dead letters"))
        if "prom" in want:
            feeds, partners, alerts = prometheus_panels(sources.prometheus)
            html += [pages.panel(feeds, pages.FEED_COLUMNS, empty="no feed has reported yet"),
                     pages.panel(partners, pages.PARTNER_COLUMNS, empty="no partner has reported yet"),
                     pages.panel(alerts, pages.ALERT_COLUMNS, empty="no alert pending or firing")]
        if "dashboards" in want:  # the panels of ops/dashboards/, drawn from the local Prometheus
            html += [pages.panel(p, pages.DASHBOARD_COLUMNS, empty="no series yet")
                     for p in dashboard_panels(sources.prometheus)]
        if "audit" in want:
            html.append(pages.panel(guarded("Audit log", "DynamoDB (audit log)", lambda: audit_panel(sources.audit())),
                                    pages.AUDIT_COLUMNS))
        if path == "/audit":
            recent = guarded("Recent audit entries", "DynamoDB (audit log)",
                             lambda: recent_audit_panel(sources.audit()))
            html.append(pages.panel(recent, pages.RECENT_AUDIT_COLUMNS, empty="no entry yet"))
        return html

    async def show(path: str, who: Principal, flash: tuple[bool, str] | None = None, status: int = 200,
                   dataset: str | None = None) -> Response:
        body = "".join(await run_in_threadpool(panels_for, path, dataset))
        return _html(pages.render(dict(pages.NAV)[path], path, who, body, flash), status)

    async def page(request: Request) -> Response:
        who = sources.tokens.who(_token(request))
        dataset = (request.query_params.get("dataset") or "").strip()[:300] or None
        return _unauthorized() if who is None else await show(request.url.path, who, dataset=dataset)

    async def login_form(request: Request) -> Response:
        return _html(pages.login_page())

    async def login(request: Request) -> Response:
        token = (await _form(request)).get("token", "").strip()
        who = sources.tokens.who(token)
        if who is None or not _same_origin(request):
            return _html(pages.login_page("That token is not valid."), 401)
        try:
            await run_in_threadpool(_audit, sources, who, "ops_console_login", "grant", "signed in to the ops console")
        except Exception as err:  # no audit entry, no session
            return _html(pages.login_page(f"The audit log cannot be written ({type(err).__name__}): try again."), 503)
        response = RedirectResponse("/", 303, headers=HEADERS)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
        return response

    async def logout(request: Request) -> Response:
        response = RedirectResponse("/login", 303, headers=HEADERS)
        response.delete_cookie(COOKIE, path="/")
        return response

    async def replay(request: Request) -> Response:
        who = sources.tokens.who(_token(request))
        if who is None:
            return _unauthorized()
        form = await _form(request)
        status, flash = await run_in_threadpool(_replay, sources, who, form, _same_origin(request))
        return await show("/dead-letters", who, (status == 200, flash), status)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok", headers=HEADERS)

    return Starlette(routes=[
        Route("/healthz", healthz), Route("/login", login_form), Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]), Route("/dead-letters/replay", replay, methods=["POST"]),
        *(Route(path, page) for path, _ in pages.NAV),
    ])


def _replay(sources: Sources, who: Principal, form: dict[str, str], same_origin: bool) -> tuple[int, str]:
    """`medistream dlq replay --feed F | --partner P --reason R` as `who`, with the form's reason: (status, message)."""
    from botocore.exceptions import BotoCoreError, ClientError
    from confluent_kafka import KafkaException

    from schemas.operations_access import load_operations_access
    from tools.dlq_units import DlqError
    from tools.job_control import Operator, authorize
    from tools.job_interface import JobControlError

    kind, target, reason, why = (form.get(k, "").strip() for k in ("kind", "target", "reason", "why"))
    if not same_origin:
        return 403, "Refused: the request came from another site."
    if kind not in ("feed", "partner") or not _NAME.fullmatch(target) or not _REASON.fullmatch(reason):
        return 400, "Refused: a replay names a feed or a partner and a reason code."
    if not why or len(why) > 200:
        return 400, "Refused: say why (up to 200 characters); it goes into the audit log."
    args = argparse.Namespace(dlq_command="replay", ids=[], actor=who.user, role=who.role,
                              reason_text=f"ops console: {why}", feed=target if kind == "feed" else None,
                              partner=target if kind == "partner" else None, reason=reason, dry_run=False, force=False)
    try:
        if not load_operations_access().allows(who.role, "replay"):
            # Refused before any back end is read; authorize() writes the denial and raises.
            authorize(Operator(who.user, who.role, args.reason_text), "replay", None,
                      f"dlq replay of {kind} {target} {reason} from the ops console", sources.audit())
        out = io.StringIO()
        code = sources.replay(sources.dlq_config(), args, out)
    except JobControlError:
        return 403, f"Refused: the role {who.role!r} may not replay dead letters. The refusal is audited."
    except DlqError as err:
        return 409, f"Nothing replayed: {err}"
    except (KafkaException, ConnectionError, BotoCoreError, ClientError, OSError) as err:
        return 503, f"Nothing replayed: a back end did not answer ({type(err).__name__})."
    summary = out.getvalue().strip().splitlines()[-1] if out.getvalue().strip() else "done"
    return (200 if code == 0 else 409), f"Replay of {kind} {target}, {reason}, by {who.user}: {summary} (audited)"
