"""The hash chain, and `llmgw audit verify` catching edits, deletions and reordering
in every store: SQLite, PostgreSQL and the JSON Lines file."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from llmgw.audit import AuditWriter, JSONLAuditSink, SQLAuditSink
from llmgw.audit.chain import GENESIS, Chain, ReadEntry, canonical, record_hash, verify
from llmgw.cli import main
from llmgw.storage.db import Database, open_database
from tests.secret_scan import SecretRegistry

PG = "postgresql://postgres@127.0.0.1:5432/test"
HMAC_KEY = "audit-hmac-test-key-0123456789abcdef"


def rec(i: int) -> dict[str, Any]:
    return {
        "kind": "request",
        "ts": 1_767_225_600.0 + i,
        "request_id": f"req_{i}",
        "key_id": "k1",
        "decision": "allowed",
        "status": 200,
        "usage": {"input_tokens": i},
    }


def entries(chain: Chain, n: int) -> list[ReadEntry]:
    return [ReadEntry(position=i + 1, sealed=chain.seal(rec(i))) for i in range(n)]


def test_intact_chain_verifies_and_links_each_record_to_the_previous() -> None:
    es = entries(Chain("a"), 5)
    report = verify(es)
    assert report.ok and report.records == 5 and report.chains["a"].last_seq == 5
    first = es[0].sealed
    assert first is not None and first.prev_hash == GENESIS
    assert first.hash == record_hash("a", 1, GENESIS, rec(0))


def test_two_chains_interleaved_verify_independently() -> None:
    a, b = Chain("a"), Chain("b")
    mixed = [ReadEntry(position=i + 1, sealed=(a if i % 2 else b).seal(rec(i))) for i in range(6)]
    report = verify(mixed)
    assert report.ok and set(report.chains) == {"a", "b"}


def test_canonical_json_survives_a_round_trip() -> None:
    value = {"b": 1.5, "a": ["é", None, True], "c": {"z": 1, "y": 2}}
    assert canonical(json.loads(canonical(value))) == canonical(value)


def test_hmac_catches_a_consistently_rehashed_tail() -> None:
    key = b"k" * 32
    signed = Chain("a", key=key)
    es = entries(signed, 3)
    # An attacker without the key rewrites record 2 and re-hashes the rest consistently.
    forged = Chain("a", seq=1, head=es[0].sealed.hash if es[0].sealed else "")
    tail = [ReadEntry(position=2, sealed=forged.seal({**rec(1), "status": 500}))]
    tail.append(ReadEntry(position=3, sealed=forged.seal(rec(2))))
    assert verify([es[0], *tail]).ok  # without the key the rewrite is invisible
    report = verify([es[0], *tail], key=key)
    assert [p.kind for p in report.problems] == ["altered"]
    assert report.problems[0].seq == 2


# --- the stores, tampered with, and the command line ---------------------------------------


async def fill(sink: SQLAuditSink | JSONLAuditSink, n: int, *, key: bytes | None = None) -> None:
    writer = AuditWriter(sink, chain="inst-1", mode="batched", hmac_key=key)
    await writer.open()
    for i in range(n):
        writer.enqueue(rec(i))
    await writer.close()


def verify_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["audit", "verify", *args])
    return code, capsys.readouterr().out


SqlTamper = Callable[[Database, str], Awaitable[None]]


async def edit_data(db: Database, t: str) -> None:
    row = await db.fetchrow(f"SELECT id, data FROM {t} WHERE seq = 3")
    assert row is not None
    data = json.loads(row["data"])
    data["usage"]["input_tokens"] = 0
    await db.execute(f"UPDATE {t} SET data = ? WHERE id = ?", canonical(data), row["id"])


async def edit_column(db: Database, t: str) -> None:
    await db.execute(f"UPDATE {t} SET status = 403 WHERE seq = 3")


async def delete_row(db: Database, t: str) -> None:
    await db.execute(f"DELETE FROM {t} WHERE seq = 3")


async def swap_rows(db: Database, t: str) -> None:
    """Exchange the stored slots (ids) of seq 3 and 4: storage order now has 4 before 3."""
    cols: tuple[str, ...] = ("chain", "seq", "ts", "kind", "request_id", "key_id", "decision")
    cols += ("status", "prev_hash", "hash", "sig", "data")
    r3 = await db.fetchrow(f"SELECT id, {', '.join(cols)} FROM {t} WHERE seq = 3")
    r4 = await db.fetchrow(f"SELECT id, {', '.join(cols)} FROM {t} WHERE seq = 4")
    assert r3 is not None and r4 is not None
    for row in (r3, r4):  # free the (chain, seq) slots first
        await db.execute(f"UPDATE {t} SET seq = ? WHERE id = ?", -row["seq"], row["id"])
    assign = ", ".join(f"{c} = ?" for c in cols)
    for slot, content in ((r3, r4), (r4, r3)):
        values = [content[c] for c in cols]
        await db.execute(f"UPDATE {t} SET {assign} WHERE id = ?", *values, slot["id"])


TAMPERS: list[tuple[str, SqlTamper, str]] = [
    ("edited record", edit_data, "altered"),
    ("edited column", edit_column, "altered"),
    ("deleted record", delete_row, "missing"),
    ("reordered records", swap_rows, "reordered"),
]


@pytest.fixture
def pg_url() -> Iterator[str]:
    schema = f"audit_{secrets.token_hex(6)}"

    async def run(sql: str) -> None:
        db = open_database(PG)
        await db.open()
        try:
            await db.execute(sql)
        finally:
            await db.close()

    try:
        asyncio.run(run(f"CREATE SCHEMA {schema}"))
    except OSError:
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    yield f"{PG}?search_path={schema}"
    asyncio.run(run(f"DROP SCHEMA {schema} CASCADE"))


def sql_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


async def prepare(url: str, tamper: SqlTamper | None) -> None:
    db = open_database(url)
    await db.open()
    try:
        await fill(SQLAuditSink(db), 6)
        if tamper is not None:
            await tamper(db, "llmgw_audit")
    finally:
        await db.close()


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
@pytest.mark.parametrize(("what", "tamper", "kind"), TAMPERS, ids=[t[0] for t in TAMPERS])
def test_verify_detects_tampering_in_sql(
    store: str,
    what: str,
    tamper: SqlTamper,
    kind: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = sql_store(store, tmp_path, request)
    asyncio.run(prepare(url, None))
    code, out = verify_cli(capsys, "--db", url)
    assert code == 0 and "ok: 6 records in 1 chain(s)" in out
    asyncio.run(tamper_only(url, tamper))
    code, out = verify_cli(capsys, "--db", url)
    assert code == 1, out
    fail = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert len(fail) == 1 and f": {kind}: " in fail[0], out
    assert "seq 3" in fail[0] or "seq 4" in fail[0], out


async def tamper_only(url: str, tamper: SqlTamper) -> None:
    db = open_database(url)
    await db.open()
    try:
        await tamper(db, "llmgw_audit")
    finally:
        await db.close()


def rewrite_lines(path: Path, change: Callable[[list[str]], list[str]]) -> None:
    lines = path.read_text().splitlines()
    path.write_text("".join(line + "\n" for line in change(lines)))


def _edit(lines: list[str]) -> list[str]:
    env = json.loads(lines[2])
    env["record"]["status"] = 500
    return [*lines[:2], canonical(env), *lines[3:]]


JSONL_TAMPERS: list[tuple[str, Callable[[list[str]], list[str]], str]] = [
    ("edited line", _edit, "altered"),
    ("deleted line", lambda ls: [*ls[:2], *ls[3:]], "missing"),
    ("swapped lines", lambda ls: [*ls[:2], ls[3], ls[2], *ls[4:]], "reordered"),
]


@pytest.mark.parametrize(
    ("what", "change", "kind"), JSONL_TAMPERS, ids=[t[0] for t in JSONL_TAMPERS]
)
def test_verify_detects_tampering_in_the_jsonl_file(
    what: str,
    change: Callable[[list[str]], list[str]],
    kind: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "audit.jsonl"
    asyncio.run(fill(JSONLAuditSink(path, fsync="always"), 6))
    assert verify_cli(capsys, "--jsonl", str(path))[0] == 0
    rewrite_lines(path, change)
    code, out = verify_cli(capsys, "--jsonl", str(path))
    assert code == 1
    (fail,) = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert f": {kind}: " in fail and ("seq 3" in fail or "seq 4" in fail), out


def test_verify_with_the_hmac_key_rejects_records_signed_with_another(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    secret_registry: SecretRegistry,
) -> None:
    secret_registry.add(HMAC_KEY)
    monkeypatch.setenv("AUDIT_TEST_HMAC", HMAC_KEY)
    path = tmp_path / "signed.jsonl"
    asyncio.run(fill(JSONLAuditSink(path), 4, key=HMAC_KEY.encode()))
    code, out = verify_cli(capsys, "--jsonl", str(path), "--hmac-key-env", "AUDIT_TEST_HMAC")
    assert code == 0 and "(signatures checked)" in out
    monkeypatch.setenv("AUDIT_TEST_HMAC", "another-key-entirely-0123456789")
    code, out = verify_cli(capsys, "--jsonl", str(path), "--hmac-key-env", "AUDIT_TEST_HMAC")
    assert code == 1 and "signature" in out


def test_a_restarted_writer_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    asyncio.run(fill(JSONLAuditSink(path), 3))
    asyncio.run(fill(JSONLAuditSink(path), 2))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["seq"] for e in lines] == [1, 2, 3, 4, 5]

    async def check() -> Any:
        return verify([e async for e in JSONLAuditSink(path).entries()])

    assert asyncio.run(check()).ok


def test_export_since_writes_verifiable_envelopes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    asyncio.run(prepare(url, None))
    out_file = tmp_path / "export.jsonl"
    since = "2026-01-01T00:00:03Z"  # rec(i).ts is 2026-01-01T00:00:00Z + i seconds
    code = main(["audit", "export", "--db", url, "--since", since, "-o", str(out_file)])
    assert code == 0
    exported = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [e["seq"] for e in exported] == [4, 5, 6]
    assert all(set(e) == {"chain", "seq", "prev", "hash", "sig", "record"} for e in exported)
    assert exported[1]["prev"] == exported[0]["hash"]
