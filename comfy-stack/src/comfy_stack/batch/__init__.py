"""Batch over folders: every image under some roots through a workflow on the fleet, results
mirrored under an output root, resumable (see README, "Batch over folders").

    summary = await run_batch(BatchSpec(roots=(Path("in"),), mapping=mapping,
                                        output_root=Path("out")), client)

``scan`` finds the images, ``mapping`` turns each into a request, ``plan`` decides what a run
does, ``manifest`` remembers it, ``runner`` does it, ``report`` tells it; ``command`` is the
``comfy-stack batch`` command and ``prefect_flows`` the same as Prefect flows.
"""

from comfy_stack.batch.manifest import MANIFEST_NAME, FileRecord, Manifest, read_manifest
from comfy_stack.batch.mapping import (
    FOLDER_PARAMS_FILE,
    GraphMapping,
    Mapping,
    MappingError,
    TemplateMapping,
    graph_mapping,
    template_mapping,
)
from comfy_stack.batch.report import BatchSummary, Counts, FileFailure, ProgressSink
from comfy_stack.batch.runner import BatchSpec, OutputConflict, run_batch
from comfy_stack.batch.scan import Rejected, ScanError, ScanFilter, ScanResult, SourceFile, scan

__all__ = [
    "FOLDER_PARAMS_FILE",
    "MANIFEST_NAME",
    "BatchSpec",
    "BatchSummary",
    "Counts",
    "FileFailure",
    "FileRecord",
    "GraphMapping",
    "Manifest",
    "Mapping",
    "MappingError",
    "OutputConflict",
    "ProgressSink",
    "Rejected",
    "ScanError",
    "ScanFilter",
    "ScanResult",
    "SourceFile",
    "TemplateMapping",
    "graph_mapping",
    "read_manifest",
    "run_batch",
    "scan",
    "template_mapping",
]
