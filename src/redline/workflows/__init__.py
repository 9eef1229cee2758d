"""LangGraph workflows: the refine loop, and running it."""

from redline.workflows._run import Progress, arefine, interrupted_result, refine
from redline.workflows.refine import RefineConfig, build_refine_graph, result_from_state

__all__ = ["Progress", "RefineConfig", "arefine", "build_refine_graph", "interrupted_result",
           "refine", "result_from_state"]
