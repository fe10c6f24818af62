"""Popularity of embedding rows: how often each id is looked up (FAE: a tiny fraction of rows
takes most lookups). `CountMinSketch` for raw 64-bit ids in bounded memory; `ExactCounter` for
ids that are already dense row indices; `select` the hot rows for a fast-memory budget."""

from dlrmx.popularity.hotset import HotSet, coverage_curve, plot_curve, row_bytes, select
from dlrmx.popularity.sketch import CountMinSketch, ExactCounter

__all__ = ["CountMinSketch", "ExactCounter", "HotSet", "coverage_curve", "plot_curve", "row_bytes",
           "select"]
