"""The real-time receiver: Callr webhooks and Actions pushes, landed durably for the loader.

`app` (the Starlette app), `server` (uvicorn with request-head limits, `serve`), `auth` (HMAC
signatures, bearer token), `landing` (the writer thread). The formats it shares with the core:
Callr's envelopes in `cdr_pipeline.callr.events`, the landing store in `cdr_pipeline.landing`.
No Dagster, no DuckDB here: the `realtime_calls`
asset loads what landed (docs/realtime.md).
"""
