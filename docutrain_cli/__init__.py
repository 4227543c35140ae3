"""docutrain: turn uploaded documents into embedded, searchable chunks."""

__version__ = "0.1.0"
