"""LangGraph workflows: the refine loop, its configuration, and running it (one task, or
a batch)."""

from redline.workflows._run import Progress, Runner, arefine, interrupted_result, refine
from redline.workflows.batch import (
    BatchItem,
    BatchOutput,
    BatchSummary,
    abatch,
    arun_batch,
    read_items,
    run_batch,
)
from redline.workflows.config import ModelSettings, RefineConfig, RunSpec
from redline.workflows.graph import build_refine_graph, result_from_state

__all__ = ["BatchItem", "BatchOutput", "BatchSummary", "ModelSettings", "Progress",
           "RefineConfig", "RunSpec", "Runner", "abatch", "arefine", "arun_batch",
           "build_refine_graph", "interrupted_result", "read_items", "refine",
           "result_from_state", "run_batch"]
