"""Everything that talks to a Supabase project: the client and its error
mapping (client), chunk rows (chunks), Storage downloads (storage), pending
rows for `enqueue --from-supabase` (pull), the SQL the project needs (schema,
schema.sql) and `docutrain doctor`'s checks of it (checks). Status updates
delivered from the outbox are status/supabase.py's.

Import the modules directly; this package imports nothing itself, so the
PyPI `supabase` package is only loaded where a client is made. (Inside it,
`import supabase` still means the PyPI package: imports are absolute.)
"""
