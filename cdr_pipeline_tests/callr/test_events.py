"""Callr's event envelopes, parsed without a server (the receiver's tests cover them over HTTP)."""

import pytest

from cdr_pipeline.callr import events


def test_numbers_keep_the_text_they_were_written_as():
    document = events.parse_json(
        b'{"billingDebit": 12.50, "callid": 1234567890123456789}', max_depth=4
    )
    assert document == {"billingDebit": "12.50", "callid": "1234567890123456789"}
    assert isinstance(document["billingDebit"], events.JsonNumber)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"a": \xff}', "body is not valid UTF-8 (byte 6"),
        (b'{"a": }', "body is not valid JSON: Expecting value (line 1, column 7)"),
        (b'{"a": NaN}', "NaN is not valid JSON"),
        (b'{"a": {"b": {"c": 1}}}', "JSON nested deeper than 2 levels"),
        (b'{"cdr": {"callid": "\\ud800"}}', "a JSON string at `cdr.callid` holds a lone surrogate"),
    ],
)
def test_bad_bodies_are_refused_with_400_naming_the_fault(body: bytes, reason: str):
    with pytest.raises(events.PayloadError) as refused:
        events.parse_json(body, max_depth=2)
    assert refused.value.status == 400
    assert reason in refused.value.reason


@pytest.mark.parametrize(
    ("document", "path"),
    [
        ({"event_id": "e1", "type": "call.inbound_hangup", "data": {"callid": "1"}}, "data"),
        ({"id": "e1", "type": "v2.call.inbound.ended", "payload": {"callid": "1"}}, "payload"),
        ({"event": "v2.call.outbound.ended", "payload": {"cdr": {"callid": "1"}}}, "payload.cdr"),
        ({"cdr": {"callid": "1"}, "dtmf": "1"}, "cdr"),
        ({"callid": "1", "direction": "inbound"}, ""),
    ],
)
def test_each_envelope_gives_the_path_to_its_cdr(document: dict, path: str):
    delivery = events.read_delivery(document, source="webhook")
    assert delivery.cdr_path == path
    assert events.cdr_at(document, path) is delivery.cdr
    assert events.cdr_value(delivery.cdr or {}, "callid") == "1"


def test_event_types_without_a_final_cdr_store_nothing_on_the_webhook_only():
    started = {"type": "v2.call.inbound.started", "id": "e1", "payload": {"callid": "1"}}
    assert not events.read_delivery(started, source="webhook").stores_call
    pushed = events.read_delivery(started, source="push")
    assert pushed.stores_call and pushed.event_type is None


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ([1], "expected a JSON object, got a JSON array"),
        ({"data": {"x": 1}}, "the object under `data` has no Callr CDR field"),
        ({"hello": "world"}, "no CDR found"),
    ],
)
def test_bodies_without_a_cdr_are_refused_with_422(document: object, reason: str):
    with pytest.raises(events.PayloadError) as refused:
        events.read_delivery(document, source="push")
    assert refused.value.status == 422
    assert reason in refused.value.reason


def test_field_names_and_directions_follow_callr_spellings():
    assert events.cdr_value({"CallId": "7"}, "callid") == "7"
    assert events.direction_of("V2.Call.Outbound.Ended") == "outbound"
    assert events.direction_of("call.inbound_hangup") == "inbound"
    assert events.direction_of("sms.mo") is None
