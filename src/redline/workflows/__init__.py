"""LangGraph workflows: the refine loop, its configuration, and running it."""

from redline.workflows._run import Progress, Runner, arefine, interrupted_result, refine
from redline.workflows.config import ModelSettings, RefineConfig, RunSpec
from redline.workflows.graph import build_refine_graph, result_from_state

__all__ = ["ModelSettings", "Progress", "RefineConfig", "RunSpec", "Runner", "arefine",
           "build_refine_graph", "interrupted_result", "refine", "result_from_state"]
