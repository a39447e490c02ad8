"""Callr: the CDR export client and the simulator that stands in for the API in tests and demos.

`client` requests and lands an export, `retry` decides what is retried and how long to wait,
`errors` holds what a failed fetch raises, `credentials` checks the key and URL and keeps the
key out of every message, `responses` reads the server's answers.

The simulator (and polars with it) is imported only by those who need it:
`from cdr_pipeline.callr.simulator import SimulatorServer`.
"""

from cdr_pipeline.callr.client import CallrExportClient, ExportDownload
from cdr_pipeline.callr.errors import (
    CallrAuthError,
    CallrError,
    CallrRequestError,
    CallrUnavailableError,
)
from cdr_pipeline.callr.retry import RetryPolicy

__all__ = [
    "CallrAuthError",
    "CallrError",
    "CallrExportClient",
    "CallrRequestError",
    "CallrUnavailableError",
    "ExportDownload",
    "RetryPolicy",
]
