"""Where document status goes: the runner's status recorder (recorder), the
outbox every change is committed to first (outbox), and its deliveries:
Supabase's `user_documents` (supabase) and signed status webhooks
(webhooks). Also the reports behind `docutrain status` and `sync`.

Import the modules directly; this package imports nothing itself.
"""
