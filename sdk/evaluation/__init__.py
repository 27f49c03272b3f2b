"""Evaluation of a family on a labelled test set, the way its paper reports it.

A detector predicts; scoring a benchmark (reading its lists and annotations, building the
ground truth, computing the paper's metric) lives here, one module per family:
``edgesentry.evaluation.mavd`` (XD-Violence frame-level AP). ``edgesentry eval`` calls them.
"""
