"""The web console: a small, live, server-rendered view of the cluster for browsers.

Owns the ``/ui`` routes of the user API. A browser has no client certificate, so it logs
in with a one-time link that a certificate holder asks for (``cloudless ui``,
``POST /v1/ui/login``); the link trades for a session cookie (HttpOnly, Secure,
SameSite=Strict, 8 h) signed with a key every coordinator reads from the store, so any
coordinator honours it. Pages are HTML rendered in pure functions (``pages``), every string
that comes from a user or a device escaped; a few lines of vanilla JavaScript re-fetch a
page's fragment when the event stream (Server-Sent Events, ``/ui/events``) says something
changed, and every few seconds regardless. No build step, no external assets.
"""
