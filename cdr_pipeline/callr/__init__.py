"""Callr: the CDR export client and the simulator that stands in for the API in tests and demos.

The simulator (and polars with it) is imported only by those who need it:
`from cdr_pipeline.callr.simulator import SimulatorServer`.
"""

from cdr_pipeline.callr.client import (
    CallrAuthError,
    CallrError,
    CallrExportClient,
    CallrRequestError,
    CallrUnavailableError,
    ExportDownload,
    RetryPolicy,
)

__all__ = [
    "CallrAuthError",
    "CallrError",
    "CallrExportClient",
    "CallrRequestError",
    "CallrUnavailableError",
    "ExportDownload",
    "RetryPolicy",
]
