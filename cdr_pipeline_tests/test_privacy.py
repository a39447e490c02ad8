"""The privacy rules (`cdr_pipeline.privacy`): what a number tells in clear, its token, the
settings, the normaliser in pseudonymise mode, the erasure list, and the landing store's purge."""

import datetime as dt
import json
import re
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from cdr_pipeline import normalize as normalize_module
from cdr_pipeline import privacy, raw_erasure
from cdr_pipeline.config import ConfigError, Settings
from cdr_pipeline.landing import LandingRecord, LandingStore
from cdr_pipeline_tests.support.exports import DAY, csv_text, export, normalize, row

KEY = b"unit-test-privacy-key-5a0c"


@pytest.mark.parametrize(
    ("number", "country", "kind"),
    [
        ("+33612345678", "33", "mobile"),
        ("+33 1 84 88 00 01", "33", "fixed"),
        ("0033800123456", "33", "toll_free"),
        ("+447700900123", "44", "mobile"),
        ("+442079460000", "44", "fixed"),
        ("+18005551234", "1", "toll_free"),
        ("+12125551234", "1", "fixed_or_mobile"),
        ("+4915112345678", "49", "mobile"),
        ("+79161234567", "7", "unknown"),
        ("+971501234567", "971", "unknown"),
        ("0612345678", None, "national"),
        ("3654", None, "short_code"),
        ("anonymous", None, "not_a_number"),
        (None, None, None),
    ],
)
def test_country_code_and_type(number: str | None, country: str | None, kind: str | None) -> None:
    rows = pl.LazyFrame({"n": [number]}, schema={"n": pl.String})
    classified = privacy.with_number_classes(rows, "n", "country", "kind").collect()
    assert classified.row(0) == (number, country, kind)


def test_a_token_is_keyed_stable_and_spelling_blind() -> None:
    token = privacy.token(KEY, "+33612345678")
    assert re.fullmatch(r"pn_[0-9a-f]{32}", token)
    assert privacy.token(KEY, "0033 6.12.34.56.78") == token
    assert privacy.token(b"another-key-of-16+chars", "+33612345678") != token
    assert privacy.token(KEY, "+33612345679") != token


def test_settings_default_to_clear_and_pseudonymise_needs_the_key() -> None:
    settings = Settings.from_env({})
    assert (settings.privacy, settings.raw_retention_days) == ("clear", None)
    with pytest.raises(ConfigError, match=r"CDR_PRIVACY_KEY must be set.*it is not set"):
        Settings.from_env({"CDR_PRIVACY": "pseudonymise"})
    secret = "short-secret"
    with pytest.raises(ConfigError, match="CDR_PRIVACY_KEY") as error:
        Settings.from_env({"CDR_PRIVACY": "pseudonymise", "CDR_PRIVACY_KEY": secret})
    assert secret not in str(error.value)
    with pytest.raises(ConfigError, match="CDR_PRIVACY must be one of clear, pseudonymise"):
        Settings.from_env({"CDR_PRIVACY": "hash"})
    with pytest.raises(ConfigError, match="CDR_RAW_RETENTION_DAYS must be a whole number"):
        Settings.from_env({"CDR_RAW_RETENTION_DAYS": "0"})
    assert Settings.from_env({"CDR_RAW_RETENTION_DAYS": "30"}).raw_retention_days == 30


def test_pseudonymise_mode_types_tokens_and_keeps_country_and_type(tmp_path: Path) -> None:
    content = csv_text(
        [
            row(callid="1", callerNumber="+33184880001", callee="+447700900123"),
            row(callid="2", callerNumber="", callee="0612345678", durationTotal="-1"),
        ]
    )
    rules = privacy.Privacy(key=KEY)
    calls, rejects, _ = normalize([export(tmp_path, content)], privacy=rules)
    expected = pl.DataFrame(
        {
            "caller_number": [privacy.token(KEY, "+33184880001")],
            "caller_name": [None],
            "callee": [privacy.token(KEY, "+447700900123")],
            "caller_country_code": ["33"],
            "caller_number_type": ["fixed"],
            "callee_country_code": ["44"],
            "callee_number_type": ["mobile"],
        },
        schema_overrides={"caller_name": pl.String},
    )
    assert_frame_equal(calls.select(expected.columns), expected)
    # The reject keeps its row, with the token for the number and no caller name.
    raw = json.loads(rejects.item(0, "raw"))
    assert raw["callee"] == privacy.token(KEY, "0612345678")
    assert raw["callerName"] is None and raw["durationTotal"] == "-1"
    assert "0612345678" not in rejects.item(0, "raw")


def test_an_erased_number_is_dropped_in_any_spelling_and_counted(tmp_path: Path) -> None:
    digest = privacy.add_to_erasure_list(tmp_path, "+33 6 12 34 56 78")
    listed = privacy.erasure_list_path(tmp_path).read_text()
    assert digest in listed and "612345678" not in listed
    rules = privacy.load_privacy(tmp_path, None)
    content = csv_text(
        [
            row(callid="1", callee="+33612345678"),
            row(callid="2", callerNumber="0033612345678", callee="+33184880001"),
            row(callid="3", callee="+33612345670"),
            row(callid="4", callee="+33612345678", durationTotal="-1"),  # erased, not rejected
        ]
    )
    calls, rejects, stats = normalize([export(tmp_path, content)], privacy=rules)
    assert calls["call_id"].to_list() == [3]
    assert rejects.is_empty()
    assert (stats.raw_rows, stats.erased_rows) == (4, 3)


def test_remove_raw_rows_keeps_the_other_rows_and_the_dialect(tmp_path: Path) -> None:
    path = tmp_path / "outbound.csv"
    text = csv_text(
        [row(callid="1", callee="+33612345678"), row(callid="2", scenarioName='A "b", c')],
        lineterminator="\r\n",
    )
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    removed = raw_erasure.remove_raw_rows(path, lambda v: privacy.number_key(v) == "+33612345678")
    assert removed == 1
    kept = csv_text([row(callid="2", scenarioName='A "b", c')], lineterminator="\r\n")
    assert path.read_bytes() == b"\xef\xbb\xbf" + kept.encode()


def test_landing_store_rewrites_and_deletes_leave_no_old_text(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite"
    received = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
    with LandingStore(path) as store:
        stored = store.append(
            [
                LandingRecord(received, "push", None, None, f"k{i}", str(i), None, "cdr", body)
                for i, body in enumerate(
                    ['{"cdr": {"callee": "+33611111111"}}', '{"cdr": {"callee": "+33622222222"}}']
                )
            ]
        )
        store.replace_bodies({stored[0].seq: '{"cdr": {"callee": "pn_x"}}'})
        store.delete_events("seq = ?", [stored[1].seq])
        assert store.count() == 1
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"33611111111" not in data and b"33622222222" not in data


def test_pseudonymise_typing_runs_natively_in_the_streaming_engine(tmp_path: Path) -> None:
    # Regression: the classes were first looked up with `replace_strict`, which the streaming
    # engine runs through its in-memory fallback (the whole column in memory).
    rules = privacy.Privacy(key=KEY, erased=frozenset({"0" * 64}), erasure_salt=b"salt")
    plan = normalize_module.normalize_exports(
        [export(tmp_path, csv_text([row()]))], partition_date=DAY, timezone="UTC", privacy=rules
    )
    typed = normalize_module._with_derived(plan.scans[0].scan(), "export", rules)
    graph = typed.show_graph(engine="streaming", plan_stage="physical", raw_output=True)
    assert 'fillcolor="0.0 0.3 1.0"' not in graph  # the colour of in-memory fallback nodes
