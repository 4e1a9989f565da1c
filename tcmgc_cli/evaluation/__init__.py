"""Evaluation: retrieval metrics of a checkpoint on a dataset split (`retrieval.py`, `tcmgc evaluate`), and moment
retrieval on a QVHighlights-style file (`moment_retrieval.py`, `tcmgc evaluate --moments`). Nothing is imported here:
training imports `retrieval` alone, without search."""
