"""What a failed export fetch raises. Every message says what to fix, never the API key."""


class CallrError(Exception):
    """Any failure to get an export from Callr. The message says what to fix; never the key.

    Attributes:
        status: The last HTTP status received, if any.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class CallrAuthError(CallrError):
    """The API key is missing, malformed, rejected (401) or not allowed (403). Not retried."""


class CallrRequestError(CallrError):
    """The request itself is wrong (400, 404, other 4xx, a redirect, a bad base URL)."""


class CallrUnavailableError(CallrError):
    """Retries are exhausted (attempts or time budget); no file was left behind.

    Attributes:
        attempts: Requests made.
        last_cause: What went wrong the last time, e.g. `HTTP 503 Service Unavailable`.
    """

    def __init__(
        self, message: str, *, attempts: int, last_cause: str, status: int | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.attempts = attempts
        self.last_cause = last_cause
