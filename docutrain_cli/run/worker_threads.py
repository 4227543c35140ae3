"""Imported first by the workers' forkserver (run/forkserver.py), before
numpy: one thread per worker process for numpy's BLAS and for OpenMP.

Workers are already one per core. numpy's OpenBLAS otherwise starts a
thread per core in each of them, and those threads spent CPU even though
a worker never multiplies a matrix: measured here, 6 % of a worker's CPU
on text PDFs (bench row 1's documents, 159-167 ms of CPU a document
against 149-158 with one thread), CPU taken from the other workers. The
same rule as Tesseract's OMP_THREAD_LIMIT (pipeline/tesseract.py).
A value set in the environment is kept.
"""

from __future__ import annotations

import os

for _variable in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
