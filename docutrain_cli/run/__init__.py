"""Running the queue: the runner (dispatcher) and everything it drives.

runner (leases jobs, feeds the pool, settles outcomes), events (what a run
tells observers and status listeners), summary (what a run did), periodic
(its timers), pool and worker (the worker processes), forkserver_child,
progress_channel (workers' "OCR page 3/40" lines), activity (what each
worker is doing, for the dashboard), reconcile (Supabase rows no webhook
announced) and process (what a worker does with one job: load, extract,
chunk, embed, then the local store, Supabase or the batch ledger).

Import the modules directly; this package imports nothing itself.
"""
