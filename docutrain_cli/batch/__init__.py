"""Embedding through OpenAI's Batch API (issue 18): half the price, answers within 24 h.

Workers chunk as usual and park chunks without vectors in the ledger
(`ledger.py`); the runner's batch step (`step.py`) plans request files within
the API's limits (`plan.py`), uploads them and creates batches through
`remote.py`, and in later runs polls them, applies the results and finishes
the documents.
"""
