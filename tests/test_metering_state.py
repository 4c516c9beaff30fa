"""The request path's snapshots: what they turn into, and how their journal lines read back."""

from __future__ import annotations

import json

import pytest

from llmgw.context import Attempt, Identity, RequestContext
from llmgw.metering import DISCARDED, UsageRecord
from llmgw.metering.state import (
    PendingRecord,
    build_record,
    close_snapshot,
    discard_snapshot,
    open_snapshot,
    parse_lines,
)
from llmgw.typedefs import ApiFormat, Operation
from llmgw.usage import Outcome, Usage

T0 = 1_780_000_000.0


def finished_context() -> RequestContext:
    ctx = RequestContext(
        request_id="req_gw_1",
        started_at=T0,
        started_mono=100.0,
        session_id="sess-1",
        agent_id="agent-1",
        identity=Identity(key_id="key_1", user="ada", team="core", project="gw"),
    )
    # What the format handler and the relay fill in after the open snapshot.
    ctx.client_format = ApiFormat.BEDROCK
    ctx.operation = Operation.MESSAGES
    ctx.stream = True
    ctx.requested_model = "claude-sonnet-4-6"
    ctx.attempts.append(Attempt(deployment="d1", provider="p1", status=529, duration=0.1234567))
    ctx.attempts.append(Attempt(deployment="d2", provider="p2", status=200, duration=0.5))
    ctx.usage = Usage(
        input_tokens=10,
        output_tokens=20,
        cache_creation_input_tokens=30,
        cache_creation_5m_tokens=10,
        cache_creation_1h_tokens=20,
        cache_read_input_tokens=40,
        thinking_tokens=5,
        server_tool_use={"web_search_requests": 2},
        stop_reason="end_turn",
        message_id="msg_1",
        parse_error="JSONDecodeError: x",
        final=True,
    )
    ctx.outcome = Outcome.COMPLETE
    ctx.status = 200
    ctx.ttfb = 0.25
    ctx.bytes_out = 1234
    ctx.finished_mono = 102.5
    return ctx


def test_open_and_close_snapshots_make_the_whole_record() -> None:
    ctx = RequestContext(
        request_id="req_gw_1",
        started_at=T0,
        started_mono=100.0,
        session_id="sess-1",
        agent_id="agent-1",
        identity=Identity(key_id="key_1", user="ada", team="core", project="gw"),
    )
    opened = open_snapshot(ctx)  # before the handler knew the format or the model
    done = finished_context()
    record = build_record(opened, close_snapshot(done, 777))
    assert record == UsageRecord(
        request_id="req_gw_1",
        started_at=T0,
        outcome="complete",
        finished_at=T0 + 2.5,
        key_id="key_1",
        user="ada",
        team="core",
        project="gw",
        session_id="sess-1",
        agent_id="agent-1",
        client_format="bedrock",
        operation="messages",
        stream=True,
        attempts=(
            {
                "deployment": "d1",
                "provider": "p1",
                "status": 529,
                "error": None,
                "duration": 0.123457,
            },
            {"deployment": "d2", "provider": "p2", "status": 200, "error": None, "duration": 0.5},
        ),
        requested_model="claude-sonnet-4-6",
        input_tokens=10,
        output_tokens=20,
        cache_creation_tokens=30,
        cache_creation_5m_tokens=10,
        cache_creation_1h_tokens=20,
        cache_read_tokens=40,
        thinking_tokens=5,
        server_tool_use={"web_search_requests": 2},
        parse_error="JSONDecodeError: x",
        stop_reason="end_turn",
        message_id="msg_1",
        ttfb=0.25,
        duration=2.5,
        bytes_out=1234,
        status=200,
        cost_micros=777,
    )
    # Plain strings, not the context's enums: the record is what a store reads back.
    assert type(record.client_format) is str and type(record.outcome) is str


def test_an_open_snapshot_alone_makes_the_in_flight_record() -> None:
    ctx = RequestContext(
        request_id="req_gw_2",
        started_at=T0,
        started_mono=100.0,
        client_format=ApiFormat.ANTHROPIC,
        operation=Operation.MESSAGES,
        stream=True,
        requested_model="claude-sonnet-4-6",
        session_id="sess-2",
        agent_id="agent-2",
        identity=Identity(key_id="key_2", user="bo", team="ops", project="p"),
    )
    assert build_record(open_snapshot(ctx), None) == UsageRecord(
        request_id="req_gw_2",
        started_at=T0,
        key_id="key_2",
        user="bo",
        team="ops",
        project="p",
        session_id="sess-2",
        agent_id="agent-2",
        client_format="anthropic",
        operation="messages",
        stream=True,
        requested_model="claude-sonnet-4-6",
    )


def test_snapshot_values_are_the_record_values_the_sql_store_writes() -> None:
    opened = open_snapshot(finished_context())
    for closed in (None, close_snapshot(finished_context(), 777)):
        pending = PendingRecord(opened, closed)
        assert pending.values() == pending.record().values()


def test_journal_lines_read_back_as_the_same_record() -> None:
    ctx = finished_context()
    entry = PendingRecord(open_snapshot(ctx), close_snapshot(ctx, 5))
    lines = PendingRecord(entry.opened).journal_line() + entry.journal_line()
    assert lines == entry.snapshot_lines()
    assert all(json.loads(line)[0] in ("o1", "c1") for line in lines.splitlines())
    opened, closed = parse_lines(lines.splitlines(), "test")
    assert opened.is_open and opened.client_format == "bedrock"
    assert closed == entry.record()


def test_whole_record_lines_of_an_older_journal_stay_readable() -> None:
    old = UsageRecord(request_id="r1", started_at=T0, outcome="complete", input_tokens=3)
    assert parse_lines([old.dumps()], "test") == [old]


def test_a_close_line_without_its_open_line_keeps_its_numbers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx = finished_context()
    (record,) = parse_lines(
        [PendingRecord(open_snapshot(ctx), close_snapshot(ctx, 5)).journal_line()], "j"
    )
    assert (record.request_id, record.outcome, record.input_tokens) == ("req_gw_1", "complete", 10)
    assert record.key_id is None
    assert "without its open line" in caplog.text


def test_unreadable_and_unknown_lines_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    good = PendingRecord(open_snapshot(finished_context())).journal_line()
    lines = [b'["z9","req_gw_2"]', b"[1,", b"", good]
    assert [r.request_id for r in parse_lines(lines, "j")] == ["req_gw_1"]
    assert caplog.text.count("skipped an unreadable line") == 2


def test_a_discarded_request_closes_as_discarded() -> None:
    ctx = RequestContext(request_id="req_gw_3", started_at=T0, started_mono=0.0)
    record = build_record(open_snapshot(ctx), discard_snapshot(ctx))
    assert (record.outcome, record.input_tokens, record.attempts) == (DISCARDED, 0, ())
    assert not record.is_open
