"""The ops console (`medistream ops serve`): one loopback page for the operator on call (issue 21, item 5).

auth.py holds the bearer tokens (digests in Secrets Manager) and roles, panels.py reads each back end
(jobs, dead letters, Prometheus, the audit chain) into a PHI-free panel, pages.py renders them as HTML
with server-side SVG sparklines, app.py is the Starlette app, command.py the `medistream ops` command.
"""
