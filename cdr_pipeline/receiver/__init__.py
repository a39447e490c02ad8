"""The real-time receiver: Callr webhooks and Actions pushes, landed durably for the loader.

`app` (the Starlette app), `server` (uvicorn with request-head limits, `serve`), `auth` (HMAC
signatures, bearer token), `envelope` (bodies -> CDR), `landing` (the SQLite landing store). No
Dagster, no DuckDB here: the `realtime_calls` asset loads what landed (docs/realtime.md).
"""
