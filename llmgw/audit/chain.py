"""The hash chain: seal records in order, and verify a stored sequence of them.

Each sealed record carries its chain name, a gap-free sequence number, the hash of the
previous record and its own hash over all of that plus the record's canonical JSON. With
an HMAC key the hash is also signed, so someone who can edit the store but does not hold
the key cannot rewrite the tail of the chain consistently. Without anchoring the last hash
elsewhere, deleting records at the very end of a chain is not detectable (nothing follows
them); every other edit, deletion or reordering is.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .._json import dumps_canonical
from ..typedefs import JSON

__all__ = (
    "GENESIS",
    "Chain",
    "ChainReport",
    "Problem",
    "ReadEntry",
    "SealedRecord",
    "VerifyReport",
    "canonical",
    "record_hash",
    "verify",
)

#: The ``prev_hash`` of a chain's first record.
GENESIS = "0" * 64


def canonical(value: Any) -> str:
    """Deterministic JSON: what is hashed, and what JSON parsing gives back unchanged."""
    return dumps_canonical(value)


def record_hash(chain: str, seq: int, prev_hash: str, record: JSON) -> str:
    return _hash_text(chain, seq, prev_hash, canonical(record))


def _hash_text(chain: str, seq: int, prev_hash: str, text: str) -> str:
    return hashlib.sha256(f"{chain}\n{seq}\n{prev_hash}\n{text}".encode()).hexdigest()


def _sign(key: bytes, digest: str) -> str:
    return hmac.new(key, digest.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class SealedRecord:
    """A record in its place in a chain, as stored."""

    chain: str
    seq: int
    prev_hash: str
    hash: str
    sig: str | None
    record: JSON
    #: ``canonical(record)`` when known (sealing computed it), so a sink need not redo it.
    text: str | None = field(default=None, compare=False, repr=False)

    def envelope(self) -> JSON:
        """The stored/exported shape (one JSON Lines line)."""
        return {
            "chain": self.chain,
            "seq": self.seq,
            "prev": self.prev_hash,
            "hash": self.hash,
            "sig": self.sig,
            "record": self.record,
        }

    @classmethod
    def from_envelope(cls, data: Any) -> SealedRecord:
        """Parse an envelope; ``ValueError`` if its shape is wrong."""
        if not isinstance(data, dict) or not isinstance(data.get("record"), dict):
            raise ValueError("not an audit envelope")
        chain, seq, prev, digest = (
            data.get("chain"),
            data.get("seq"),
            data.get("prev"),
            data.get("hash"),
        )
        sig = data.get("sig")
        if not (
            isinstance(chain, str)
            and isinstance(seq, int)
            and isinstance(prev, str)
            and isinstance(digest, str)
            and (sig is None or isinstance(sig, str))
        ):
            raise ValueError("audit envelope fields have the wrong types")
        return cls(
            chain=chain, seq=seq, prev_hash=prev, hash=digest, sig=sig, record=data["record"]
        )


class Chain:
    """The writer's head of one chain. Not thread-safe; the writer serialises calls."""

    __slots__ = ("_key", "hash", "name", "seq")

    def __init__(self, name: str, *, seq: int = 0, head: str = GENESIS, key: bytes | None = None):
        self.name = name
        self.seq = seq
        self.hash = head
        self._key = key

    def seal(self, record: JSON) -> SealedRecord:
        seq = self.seq + 1
        text = canonical(record)
        digest = _hash_text(self.name, seq, self.hash, text)
        sealed = SealedRecord(
            chain=self.name,
            seq=seq,
            prev_hash=self.hash,
            hash=digest,
            sig=_sign(self._key, digest) if self._key is not None else None,
            record=record,
            text=text,
        )
        self.seq, self.hash = seq, digest
        return sealed

    def reset(self, seq: int, head: str) -> None:
        """Go back to an earlier head (a group of records whose write failed)."""
        assert seq <= self.seq
        self.seq, self.hash = seq, head


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadEntry:
    """One stored entry in storage order: a record, or why it could not be read."""

    position: int
    sealed: SealedRecord | None = None
    problem: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    kind: str  # "altered", "missing", "reordered", "unreadable"
    chain: str | None
    position: int
    seq: int | None
    detail: str

    def __str__(self) -> str:
        where = f"chain {self.chain!r} " if self.chain is not None else ""
        seq = f"seq {self.seq} " if self.seq is not None else ""
        return f"{where}{seq}(position {self.position}): {self.kind}: {self.detail}"


@dataclass(slots=True, kw_only=True)
class ChainReport:
    name: str
    records: int = 0
    last_seq: int = 0
    problem: Problem | None = None


@dataclass(slots=True, kw_only=True)
class VerifyReport:
    records: int = 0
    chains: dict[str, ChainReport] = field(default_factory=dict)
    unreadable: list[Problem] = field(default_factory=list)
    #: Request ids with a start record and no completed record (sync mode crash).
    incomplete: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[Problem]:
        found = list(self.unreadable)
        found += [c.problem for c in self.chains.values() if c.problem is not None]
        return sorted(found, key=lambda p: p.position)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(slots=True)
class _Light:
    position: int
    seq: int
    prev: str
    hash: str
    fault: str | None


def verify(entries: Iterable[ReadEntry], *, key: bytes | None = None) -> VerifyReport:
    """Walk entries in storage order; report the first problem of each chain.

    Only a few strings per record are kept, so a large log verifies in bounded memory
    per record rather than holding every record.
    """
    report = VerifyReport()
    per_chain: dict[str, list[_Light]] = {}
    started: dict[str, None] = {}
    completed: set[str] = set()
    for entry in entries:
        report.records += 1
        sealed = entry.sealed
        if sealed is None:
            detail = entry.problem or "unreadable"
            report.unreadable.append(
                Problem(
                    kind="unreadable", chain=None, position=entry.position, seq=None, detail=detail
                )
            )
            continue
        fault = entry.problem
        if (
            fault is None
            and record_hash(sealed.chain, sealed.seq, sealed.prev_hash, sealed.record)
            != sealed.hash
        ):
            fault = "content does not match its hash"
        if (
            fault is None
            and key is not None
            and (sealed.sig is None or not hmac.compare_digest(sealed.sig, _sign(key, sealed.hash)))
        ):
            fault = "signature missing or wrong for the configured key"
        per_chain.setdefault(sealed.chain, []).append(
            _Light(entry.position, sealed.seq, sealed.prev_hash, sealed.hash, fault)
        )
        rid = sealed.record.get("request_id")
        kind = sealed.record.get("kind")
        if isinstance(rid, str):
            if kind == "request.start":
                started[rid] = None
            elif kind == "request":
                completed.add(rid)
    for name, lights in per_chain.items():
        report.chains[name] = _walk(name, lights)
    report.incomplete = [rid for rid in started if rid not in completed]
    return report


def _walk(name: str, lights: list[_Light]) -> ChainReport:
    rep = ChainReport(name=name, records=len(lights))
    expected, prev = 1, GENESIS
    for i, e in enumerate(lights):
        rep.last_seq = max(rep.last_seq, e.seq)
        if rep.problem is not None:
            continue

        def problem(kind: str, detail: str, e: _Light = e) -> Problem:
            return Problem(kind=kind, chain=name, position=e.position, seq=e.seq, detail=detail)

        if e.fault is not None:
            rep.problem = problem("altered", e.fault)
        elif e.seq < expected:
            rep.problem = problem("reordered", f"seq {e.seq} stored after seq {expected - 1}")
        elif e.seq > expected:
            if any(later.seq == expected for later in lights[i + 1 :]):
                rep.problem = problem("reordered", f"seq {e.seq} stored before seq {expected}")
            else:
                gap = f"seq {expected}" if e.seq == expected + 1 else f"seq {expected}..{e.seq - 1}"
                rep.problem = problem("missing", f"{gap} missing before this record")
        elif e.prev != prev:
            rep.problem = problem(
                "altered", f"link broken: prev hash does not match seq {expected - 1}"
            )
        else:
            expected, prev = e.seq + 1, e.hash
    return rep
