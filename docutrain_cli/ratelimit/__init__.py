"""The embedding API's rate limit, shared by every worker and machine: the
budget (budget: a token bucket in a SQLite file beside the store), its row in
the pgmq Postgres (postgres) and a worker's side of it around each request
(pacing).

Import the modules directly; this package imports nothing itself.
"""
