"""`docutrain serve`: the HTTP edge over the same queue and settings as the CLI.

- dashboard.py: the web dashboard (`GET /`, job pages, Retry) and `/metrics`;
- overview.py: what the dashboard shows, read from the queue and the store's files;
- metrics.py: the Prometheus collector;
- session.py: browser log-in cookies and CSRF tokens for the dashboard;
- templates/ and static/: the pages, our own CSS and JS (nothing from a CDN).
"""
