"""Destinations for results: the local SQLite store lives in docutrain_cli.store;
`supabase` writes status rows and chunk rows to a Supabase project."""
