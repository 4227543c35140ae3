"""The document pipeline's pure transforms: which files we take (formats,
discover), load -> extract (PDF, OCR, office, HTML, CSV) -> chunk -> embed,
with the token counts and model table they need. The job orchestration that
strings them together and stores the result is run/process.py.

Kept import-free on purpose: pymupdf and openai are heavy, and only worker
processes need them (`docutrain --help` must stay fast). Import the stage
modules directly, e.g. `from docutrain_cli.pipeline.chunk import chunk_pages`.
"""
