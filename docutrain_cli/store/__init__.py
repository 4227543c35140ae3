"""The local store: one SQLite file of documents, chunks and vectors
(local), and search over it (search). Import the modules directly."""
