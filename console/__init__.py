"""The web console: server-rendered pages (Jinja2, htmx) for admin keys over the admin API
and the query API. It holds no data and no credential of its own: each page reads and
changes through those APIs, over HTTP, with the key of the session that asks, so tenant
isolation is theirs (and the store engine's), and every change lands on the control topic
as any other admin call does.

- `console/sessions.py`: the server-side sessions (random ids, expiry, a bounded store);
- `console/backend.py`: the HTTP calls to the admin and query APIs;
- `console/security.py`: headers (CSP), the session and CSRF checks every route passes;
- `console/charts.py`: small SVG charts rendered on the server (no chart library);
- `console/pages/`: one module per page;
- `console/server.py`: the application and `govledger console`."""
