"""The console's HTML: panels as tables, sparklines as inline SVG drawn here (no script, no build step).

Every value reaches the page through `html.escape`; the pages carry no JavaScript and load nothing
from elsewhere (a Content-Security-Policy of `default-src 'none'` is sent with them, app.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from tools.ops_console.auth import Principal
from tools.ops_console.panels import Panel

NAV = (("/", "Overview"), ("/jobs", "Jobs"), ("/dead-letters", "Dead letters"), ("/feeds", "Feeds & partners"),
       ("/dashboards", "Dashboards"), ("/lineage", "Lineage"), ("/audit", "Audit"))
STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
header{background:#1d2330;color:#fff;padding:.6em 1.2em;display:flex;gap:1.2em;align-items:center}
header a{color:#cfd8ea;text-decoration:none}header a.on{color:#fff;font-weight:600}
header .who{margin-left:auto}main{padding:1em 1.2em;display:grid;gap:1em}
section{background:#fff;border:1px solid #d9dde5;border-radius:6px;padding:.6em 1em}
section.down{border-color:#c0392b;background:#fdf0ee}h2{font-size:15px;margin:.2em 0 .5em}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.25em .6em;border-bottom:1px solid #eceef2}
th{font-weight:600;color:#5a6275}.note{color:#5a6275;font-size:12px}.error{color:#c0392b;font-weight:600}
.ok{color:#1e8449;font-weight:600}.bad{color:#c0392b;font-weight:600}form.inline{display:flex;gap:.3em}
input[type=text],input[type=password]{padding:.2em .4em}button{padding:.2em .7em}
.flash{padding:.5em 1em;border-radius:6px}.flash.ok{background:#e9f7ef}.flash.bad{background:#fdf0ee}
"""


def sparkline(values: Sequence[float], width: int = 160, height: int = 28) -> str:
    """An inline SVG polyline of `values` scaled to the box (flat at the bottom when all are zero)."""
    if not values:
        return ""
    top = max(values) or 1.0
    step = width / max(len(values) - 1, 1)
    points = " ".join(f"{i * step:.1f},{height - 2 - (v / top) * (height - 4):.1f}" for i, v in enumerate(values))
    return (f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="last 30 minutes, peak {top:.2f}/s"><polyline fill="none" stroke="#2e86c1" '
            f'stroke-width="1.5" points="{points}"/></svg>')


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return sparkline(value)
    return escape(str(value))


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], extra: Any = None) -> str:
    """Rows as a table of `columns` ((key, heading), ...); `extra(row)` adds a last cell (a form)."""
    head = "".join(f"<th>{escape(h)}</th>" for _, h in columns) + ("<th></th>" if extra else "")
    body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(k))}</td>" for k, _ in columns)
                   # B610 - not SQL: a Starlette/HTML helper bandit matches by name
                   + (f"<td>{extra(r)}</td>" if extra else "") + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def panel(p: Panel, columns: Sequence[tuple[str, str]], extra: Any = None, empty: str = "nothing to show") -> str:
    """A panel: its table, or its error when its back end is unreachable."""
    slug = p.title.split(":")[0].lower().replace(" ", "-")
    if not p.ok:
        return (f'<section class="down" id="{slug}"><h2>{escape(p.title)}</h2>'
                f'<p class="error">{escape(p.error or "unavailable")}</p></section>')
    content = table(p.rows, columns, extra) if p.rows else f"<p>{escape(empty)}</p>"
    note = f'<p class="note">{escape(p.note)}</p>' if p.note else ""
    return f'<section id="{slug}"><h2>{escape(p.title)}</h2>{content}{note}</section>'


JOB_COLUMNS = (("job", "job"), ("state", "state"), ("uptime_s", "uptime s"), ("checkpoint", "last checkpoint"),
               ("checkpoint_age_s", "age s"), ("checkpoint_bytes", "bytes"), ("savepoint", "last savepoint"),
               ("restarts", "restarts"), ("note", "note"))
DLQ_COLUMNS = (("kind", "from"), ("target", "feed / partner"), ("stage", "stage"), ("reason", "reason"),
               ("count", "dead letters"), ("newest", "newest"))
FEED_COLUMNS = (("feed", "feed"), ("per_s", "records/s"), ("spark", "last 30 min"), ("last_record", "last record"))
PARTNER_COLUMNS = (("partner", "partner"), ("per_s", "delivered/s"), ("spark", "last 30 min"),
                   ("rate_limited_per_s", "429/s"), ("circuit", "circuit"))
ALERT_COLUMNS = (("alert", "alert"), ("state", "state"), ("severity", "severity"), ("on", "on"), ("since", "since"))
DASHBOARD_COLUMNS = (("series", "series"), ("spark", "last 30 min"), ("latest", "latest"), ("unit", "unit"))
LINEAGE_COLUMNS = (("job", "job"), ("state", "newest event"), ("reads", "reads"), ("writes", "writes"))


def lineage_form(dataset: str | None) -> str:
    """The dataset whose lineage to show (a GET: nothing changes)."""
    return (f'<form class="inline" method="get" action="/lineage"><input type="text" name="dataset" size="70" '
            f'value="{escape(dataset or "")}" placeholder="namespace/name, e.g. kafka://127.0.0.1:19092/raw.feed" '
            f'aria-label="dataset"><button type="submit">Show</button></form>')


RECENT_AUDIT_COLUMNS = (("seq", "seq"), ("at", "at"), ("actor", "actor"), ("role", "role"), ("action", "action"),
                        ("decision", "decision"))
AUDIT_COLUMNS = (("verified", "chain verifies"), ("entries", "entries"), ("head_seq", "head seq"),
                 ("first_bad_seq", "first bad seq"), ("problem", "problem"))


def replay_form(row: dict[str, Any]) -> str:
    """The replay action of one (feed or partner, reason) row: a reason is required; the server checks the role."""
    return (f'<form class="inline" method="post" action="/dead-letters/replay">'
            f'<input type="hidden" name="kind" value="{escape(row["kind"])}">'
            f'<input type="hidden" name="target" value="{escape(row["target"])}">'
            f'<input type="hidden" name="reason" value="{escape(row["stage"])}.{escape(row["reason"])}">'
            f'<input type="text" name="why" required maxlength="200" placeholder="why (audited)" '
            f'aria-label="why">'
            f'<button type="submit">Replay</button></form>')


def render(title: str, path: str, user: Principal, body: str, flash: tuple[bool, str] | None = None) -> str:
    """A whole page: the header with navigation and the signed-in user, then `body`."""
    nav = "".join(f'<a href="{href}"{" class=on" if href == path else ""}>{escape(name)}</a>' for href, name in NAV)
    message = (f'<p class="flash {"ok" if flash[0] else "bad"}" id="flash">{escape(flash[1])}</p>' if flash else "")
    who = (f'<span class="who">{escape(user.user)} ({escape(user.role)}) '
           f'<form method="post" action="/logout" style="display:inline"><button>Sign out</button></form></span>')
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)} · medistream ops"
            f"</title><style>{STYLE}</style></head><body><header><strong>medistream ops</strong>{nav}{who}</header>"
            f"<main>{message}{body}</main></body></html>")


def login_page(message: str | None = None) -> str:
    """The sign-in form: a bearer token, posted once and kept in an HttpOnly, SameSite=Strict cookie."""
    error = f'<p class="error" id="flash">{escape(message)}</p>' if message else ""
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>Sign in · medistream ops</title>"
            f"<style>{STYLE}</style></head><body><header><strong>medistream ops</strong></header><main><section>"
            f"<h2>Sign in</h2>{error}<form method=post action=/login><label>Token "
            f'<input type=password name=token autocomplete=off required></label> <button type=submit>Sign in</button>'
            f'</form><p class="note">Tokens come from <code>medistream ops token add --user NAME --role viewer|operator'
            f"</code> (stored as digests in Secrets Manager).</p></section></main></body></html>")
