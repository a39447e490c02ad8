"""Settings from the environment, in one place, with the contract's documented defaults."""

import datetime as dt
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_BASE_URL = "https://api.callr.com"
DEFAULT_START_DATE = "2026-01-01"
DEFAULT_TIMEZONE = "UTC"
DEFAULT_DATA_DIR = "./data"
LAKE_URL_VARIABLE = "CDR_LAKE_URL"  # raw files and Parquet: a folder or s3://bucket/prefix
DEFAULT_LATE_DAYS = 2
DEFAULT_DAYS_PER_RUN = 31  # days a backfill run loads (BackfillPolicy.multi_run)
DEFAULT_FETCH_CONCURRENCY = 4  # days of a run downloading at once (each: both directions)
# Callr export requests (cdr_pipeline.callr.retry.RetryPolicy, the client, the Dagster resource).
DEFAULT_CALLR_MAX_ATTEMPTS = 6  # requests per export at most, the first one included
DEFAULT_CALLR_BASE_DELAY_S = 0.5  # first backoff bound; it doubles each attempt (full jitter)
DEFAULT_CALLR_MAX_DELAY_S = 30.0  # one backoff at most (a Retry-After may ask for longer)
DEFAULT_CALLR_MAX_TOTAL_S = 300.0  # no attempt or wait may end later than this after the first
DEFAULT_CALLR_TIMEOUT_S = 60.0  # connect, read and write timeout of each request
# ITU-T E.425 NER: calls ended by user behaviour count as effective (Q.850 17, 18, 19, 21).
DEFAULT_NER_CAUSES = (17, 18, 19, 21)
DEFAULT_ALERT_VOLUME_CHANGE = 0.3  # relative change of a day's calls vs the same weekday before
DEFAULT_ALERT_RATIO_DROP = 0.1  # absolute drop of ASR / NER (0.1 = 10 points)
DEFAULT_ALERT_MIN_CALLS = 10  # fewer calls than this on a compared day: too few to judge
# Real-time receiver (docs/realtime.md). Its secrets (CDR_WEBHOOK_SECRET, CDR_PUSH_TOKEN) are read
# by the receiver itself (cdr_pipeline.receiver.auth), never held here.
# Webhook signature formats: (signature header, timestamp header or None) by CDR_WEBHOOK_FORMAT.
WEBHOOK_FORMATS: dict[str, tuple[str, str | None]] = {
    "callr": ("X-CALLR-HmacSignature", None),  # Callr's documented webhooks (docs/realtime.md)
    "timestamped": ("X-Callr-Signature", "X-Callr-Timestamp"),  # HMAC of `<unix s>.<body>`
}
DEFAULT_WEBHOOK_FORMAT = "callr"
WEBHOOK_HMAC_ALGORITHMS = ("md5", "sha1", "sha256", "sha384", "sha512")
DEFAULT_WEBHOOK_HMAC_ALGORITHM = "sha256"
DEFAULT_WEBHOOK_TOLERANCE_S = 300
DEFAULT_RECEIVER_MAX_BODY_BYTES = 64 * 1024  # a CDR event is about 1 KiB
DEFAULT_RECEIVER_MAX_JSON_DEPTH = 16  # an event envelope nests 3 levels
DEFAULT_RECEIVER_MAX_HEADER_BYTES = 16 * 1024  # request line + headers (h11's default)
DEFAULT_RECEIVER_REQUEST_TIMEOUT_S = 10  # for the request head, and again for the body
DEFAULT_REALTIME_RECONCILE_DAYS = 2  # the export must confirm real-time calls after this
# Privacy (README "Privacy"): CDR_PRIVACY, CDR_PRIVACY_KEY (read at run time by the resource that
# needs it, never held here), CDR_RAW_RETENTION_DAYS.
PRIVACY_MODES = ("clear", "pseudonymise")
DEFAULT_PRIVACY = "clear"
MIN_PRIVACY_KEY_CHARS = 16


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable and the fix."""


@dataclass(frozen=True)
class Settings:
    """Resolved settings. Never holds the API key: the Callr resource reads that itself."""

    base_url: str
    data_dir: Path
    warehouse: Path
    start_date: dt.date
    timezone: str
    late_days: int = DEFAULT_LATE_DAYS
    days_per_run: int = DEFAULT_DAYS_PER_RUN
    fetch_concurrency: int = DEFAULT_FETCH_CONCURRENCY
    account_sid: str | None = None  # set to authenticate with HTTP Basic (SID, key)
    ner_causes: tuple[int, ...] = DEFAULT_NER_CAUSES
    alert_volume_change: float = DEFAULT_ALERT_VOLUME_CHANGE
    alert_ratio_drop: float = DEFAULT_ALERT_RATIO_DROP
    alert_min_calls: int = DEFAULT_ALERT_MIN_CALLS
    # Real-time receiver and timestamps without an offset (docs/realtime.md, README).
    webhook_format: str = DEFAULT_WEBHOOK_FORMAT
    webhook_signature_header: str = WEBHOOK_FORMATS[DEFAULT_WEBHOOK_FORMAT][0]
    webhook_timestamp_header: str | None = WEBHOOK_FORMATS[DEFAULT_WEBHOOK_FORMAT][1]
    webhook_hmac_algorithm: str = DEFAULT_WEBHOOK_HMAC_ALGORITHM
    webhook_tolerance_s: int = DEFAULT_WEBHOOK_TOLERANCE_S
    webhook_require_timestamp: bool = False
    receiver_max_body_bytes: int = DEFAULT_RECEIVER_MAX_BODY_BYTES
    receiver_max_json_depth: int = DEFAULT_RECEIVER_MAX_JSON_DEPTH
    receiver_max_header_bytes: int = DEFAULT_RECEIVER_MAX_HEADER_BYTES
    receiver_request_timeout_s: int = DEFAULT_RECEIVER_REQUEST_TIMEOUT_S
    naive_timezone: str = DEFAULT_TIMEZONE
    realtime_reconcile_days: int = DEFAULT_REALTIME_RECONCILE_DAYS
    lake_url: str = ""  # CDR_LAKE_URL; empty: the data directory
    privacy: str = DEFAULT_PRIVACY
    raw_retention_days: int | None = None  # None: raw exports and landed events are kept
    calls_retention_days: int | None = None  # None: calls are kept

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        data_dir = Path(env.get("CDR_DATA_DIR") or DEFAULT_DATA_DIR)
        warehouse = Path(env.get("CDR_WAREHOUSE") or data_dir / "warehouse.duckdb")
        lake_url = check_lake_url(env.get(LAKE_URL_VARIABLE) or str(data_dir))
        start_raw = env.get("CDR_START_DATE") or DEFAULT_START_DATE
        try:
            start_date = dt.date.fromisoformat(start_raw)
        except ValueError:
            raise ConfigError(
                f"CDR_START_DATE must be a date like 2026-01-01, got {start_raw!r}"
            ) from None
        tz = env.get("CDR_TIMEZONE") or DEFAULT_TIMEZONE
        check_timezone(tz)
        late_raw = env.get("CDR_LATE_DAYS") or str(DEFAULT_LATE_DAYS)
        if not late_raw.isdigit():
            raise ConfigError(f"CDR_LATE_DAYS must be a whole number of days, got {late_raw!r}")
        days_per_run = _parse_count(env, "CDR_DAYS_PER_RUN", DEFAULT_DAYS_PER_RUN)
        fetch_concurrency = _parse_count(env, "CDR_FETCH_CONCURRENCY", DEFAULT_FETCH_CONCURRENCY)
        if not days_per_run or not fetch_concurrency:
            raise ConfigError("CDR_DAYS_PER_RUN and CDR_FETCH_CONCURRENCY must be at least 1")
        return cls(
            late_days=int(late_raw),
            days_per_run=days_per_run,
            fetch_concurrency=fetch_concurrency,
            account_sid=env.get("CALLR_ACCOUNT_SID") or None,
            base_url=(env.get("CALLR_BASE_URL") or DEFAULT_BASE_URL).rstrip("/"),
            data_dir=data_dir,
            warehouse=warehouse,
            start_date=start_date,
            timezone=tz,
            ner_causes=parse_ner_causes(env.get("CDR_NER_CAUSES")),
            alert_volume_change=_parse_threshold(
                env, "CDR_ALERT_VOLUME_CHANGE", DEFAULT_ALERT_VOLUME_CHANGE
            ),
            alert_ratio_drop=_parse_threshold(
                env, "CDR_ALERT_RATIO_DROP", DEFAULT_ALERT_RATIO_DROP
            ),
            alert_min_calls=_parse_count(env, "CDR_ALERT_MIN_CALLS", DEFAULT_ALERT_MIN_CALLS),
            **_receiver_settings(env),
            naive_timezone=naive_timezone(env),
            realtime_reconcile_days=_parse_count(
                env, "CDR_REALTIME_RECONCILE_DAYS", DEFAULT_REALTIME_RECONCILE_DAYS
            ),
            lake_url=lake_url,
            privacy=privacy_mode(env),
            raw_retention_days=_parse_retention(env, "CDR_RAW_RETENTION_DAYS"),
            calls_retention_days=_parse_retention(env, "CDR_CALLS_RETENTION_DAYS"),
        )


def s3_location(url: str) -> tuple[str, str] | None:
    """(bucket, prefix) of an `s3://bucket/prefix` URL; None for a folder."""
    if not url.lower().startswith("s3://"):
        return None
    parts = urlsplit(url)
    return parts.netloc, parts.path.strip("/")


def check_lake_url(url: str) -> str:
    """CDR_LAKE_URL as given, if it is a folder or `s3://bucket[/prefix]`; else a ConfigError.

    Credentials belong in the AWS variables, never in the URL (it is shown in messages and
    stored in run config): a URL carrying any is refused without being echoed.
    """
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.scheme.lower() != "s3":
        raise ConfigError(
            f"{LAKE_URL_VARIABLE} must be a folder or s3://bucket/prefix, "
            f"got a {parts.scheme}:// URL"
        )
    if "@" in parts.netloc or parts.query or parts.fragment:
        raise ConfigError(
            f"{LAKE_URL_VARIABLE} must be s3://bucket/prefix with no credentials or options in "
            "it: put credentials in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the endpoint "
            "in AWS_ENDPOINT_URL"
        )
    if not parts.netloc:
        raise ConfigError(f"{LAKE_URL_VARIABLE} must name a bucket: s3://bucket/prefix")
    return url


def privacy_mode(env: Mapping[str, str]) -> str:
    """CDR_PRIVACY (`clear` or `pseudonymise`), checked with its key: in pseudonymise mode
    CDR_PRIVACY_KEY must be set (its value never appears in a message)."""
    raw = (env.get("CDR_PRIVACY") or DEFAULT_PRIVACY).strip().lower()
    mode = "pseudonymise" if raw == "pseudonymize" else raw
    if mode not in PRIVACY_MODES:
        raise ConfigError(f"CDR_PRIVACY must be one of {', '.join(PRIVACY_MODES)}, got {raw!r}")
    key = env.get("CDR_PRIVACY_KEY") or ""
    if mode == "pseudonymise" and len(key) < MIN_PRIVACY_KEY_CHARS:
        raise ConfigError(
            "CDR_PRIVACY_KEY must be set to a secret of at least "
            f"{MIN_PRIVACY_KEY_CHARS} characters when CDR_PRIVACY=pseudonymise "
            f"({'it is not set' if not key else 'it is too short'}; e.g. "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    return mode


def _parse_retention(env: Mapping[str, str], name: str) -> int | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{name} must be a whole number of days (at least 1), got {raw!r}")
    return int(raw)


def parse_ner_causes(raw: str | None) -> tuple[int, ...]:
    """Q.850 codes from CDR_NER_CAUSES (comma-separated, e.g. `17,18,19,21`); default if unset."""
    if not raw or not raw.strip():
        return DEFAULT_NER_CAUSES
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if not parts or not all(p.isdigit() and 1 <= int(p) <= 127 for p in parts):
        raise ConfigError(
            f"CDR_NER_CAUSES must be comma-separated Q.850 cause codes (1-127) such as "
            f"17,18,19,21, got {raw!r}"
        )
    return tuple(sorted({int(p) for p in parts}))


def _parse_threshold(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name) or str(default)
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 10:
        raise ConfigError(f"{name} must be a number such as {default} (0.3 = 30 %), got {raw!r}")
    return value


def _parse_count(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name) or str(default)
    if not raw.isdigit():
        raise ConfigError(f"{name} must be a whole number such as {default}, got {raw!r}")
    return int(raw)


def _receiver_settings(env: dict[str, str]) -> "_ReceiverSettings":
    """The receiver's settings (docs/realtime.md): the webhook format and its overrides, limits."""
    fmt = (env.get("CDR_WEBHOOK_FORMAT") or DEFAULT_WEBHOOK_FORMAT).strip().lower()
    if fmt not in WEBHOOK_FORMATS:
        raise ConfigError(
            f"CDR_WEBHOOK_FORMAT must be one of {', '.join(WEBHOOK_FORMATS)}, got {fmt!r}"
        )
    signature_header, timestamp_header = WEBHOOK_FORMATS[fmt]
    if "CDR_WEBHOOK_TIMESTAMP_HEADER" in env:  # set but empty: no timestamp header
        timestamp_header = env["CDR_WEBHOOK_TIMESTAMP_HEADER"].strip() or None
    algorithm = (env.get("CDR_WEBHOOK_HMAC_ALGORITHM") or DEFAULT_WEBHOOK_HMAC_ALGORITHM).lower()
    if algorithm.strip().replace("-", "") not in WEBHOOK_HMAC_ALGORITHMS:
        raise ConfigError(
            f"CDR_WEBHOOK_HMAC_ALGORITHM must be one of {', '.join(WEBHOOK_HMAC_ALGORITHMS)}, "
            f"got {algorithm!r}"
        )
    timeout = _parse_count(
        env, "CDR_RECEIVER_REQUEST_TIMEOUT_S", DEFAULT_RECEIVER_REQUEST_TIMEOUT_S
    )
    if timeout == 0:
        raise ConfigError("CDR_RECEIVER_REQUEST_TIMEOUT_S must be at least 1 second")
    return {
        "webhook_format": fmt,
        "webhook_signature_header": _parse_header_name(
            env, "CDR_WEBHOOK_SIGNATURE_HEADER", signature_header
        ),
        "webhook_timestamp_header": timestamp_header
        and _parse_header_name({}, "CDR_WEBHOOK_TIMESTAMP_HEADER", timestamp_header),
        "webhook_hmac_algorithm": algorithm.strip().replace("-", ""),
        "webhook_tolerance_s": _parse_count(
            env, "CDR_WEBHOOK_TOLERANCE_S", DEFAULT_WEBHOOK_TOLERANCE_S
        ),
        "webhook_require_timestamp": _parse_flag(env, "CDR_WEBHOOK_REQUIRE_TIMESTAMP"),
        "receiver_max_body_bytes": _parse_count(
            env, "CDR_RECEIVER_MAX_BODY_BYTES", DEFAULT_RECEIVER_MAX_BODY_BYTES
        ),
        "receiver_max_json_depth": _parse_count(
            env, "CDR_RECEIVER_MAX_JSON_DEPTH", DEFAULT_RECEIVER_MAX_JSON_DEPTH
        ),
        "receiver_max_header_bytes": _parse_count(
            env, "CDR_RECEIVER_MAX_HEADER_BYTES", DEFAULT_RECEIVER_MAX_HEADER_BYTES
        ),
        "receiver_request_timeout_s": timeout,
    }


class _ReceiverSettings(TypedDict):
    webhook_format: str
    webhook_signature_header: str
    webhook_timestamp_header: str | None
    webhook_hmac_algorithm: str
    webhook_tolerance_s: int
    webhook_require_timestamp: bool
    receiver_max_body_bytes: int
    receiver_max_json_depth: int
    receiver_max_header_bytes: int
    receiver_request_timeout_s: int


def naive_timezone(env: Mapping[str, str] | None = None) -> str:
    """CDR_NAIVE_TIMEZONE: the IANA zone a timestamp without an offset is read in (UTC)."""
    env = os.environ if env is None else env
    name = (env.get("CDR_NAIVE_TIMEZONE") or DEFAULT_TIMEZONE).strip()
    try:
        check_timezone(name)
    except ConfigError:
        raise ConfigError(
            "CDR_NAIVE_TIMEZONE must be an IANA time zone such as UTC or Europe/Paris (the zone "
            f"of timestamps written without an offset), got {name!r}"
        ) from None
    return name


def _parse_header_name(env: dict[str, str], name: str, default: str) -> str:
    raw = (env.get(name) or default).strip()
    if not re.fullmatch(r"[A-Za-z0-9-]+", raw):
        raise ConfigError(f"{name} must be an HTTP header name such as {default}, got {raw!r}")
    return raw


def _parse_flag(env: dict[str, str], name: str) -> bool:
    raw = (env.get(name) or "false").strip().lower()
    if raw not in ("true", "false", "1", "0", "yes", "no"):
        raise ConfigError(f"{name} must be true or false, got {raw!r}")
    return raw in ("true", "1", "yes")


def check_timezone(name: str) -> ZoneInfo:
    """The IANA zone `name`, or a ConfigError naming CDR_TIMEZONE."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"CDR_TIMEZONE must be an IANA time zone such as UTC or Europe/Paris, got {name!r}"
        ) from None


def day_window(day: dt.date, timezone: str) -> tuple[dt.datetime, dt.datetime]:
    """The half-open window [start, end) of local `day` in `timezone`, as UTC instants."""
    tz = check_timezone(timezone)
    start = dt.datetime.combine(day, dt.time(), tzinfo=tz)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=tz)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)
