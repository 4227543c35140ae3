"""The document pipeline: load -> extract -> chunk -> embed -> store.

Kept import-free on purpose: pymupdf and openai are heavy, and only worker
processes need them (`docutrain --help` must stay fast). Import the stage
modules directly, e.g. `from docutrain_cli.pipeline.process import process_job`.
"""
