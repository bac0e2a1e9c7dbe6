"""The canonical form the hash chain is computed over (docs/schema.md documents it)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from services.audit_chain import GENESIS_HASH, canonical, chain_hash, decimal_text

EVENT = {
    "id": 7,
    "alert_id": 3,
    "event_type": "opened",
    "occurred_at": datetime(2026, 3, 4, 12, 0, tzinfo=UTC),
    "actor": "system:evaluation",
    "severity": "warning",
    "state": "open",
    "observed_value": Decimal("4.1500"),
    "threshold": Decimal("3.000000000000000000"),
    "details": {"limit_version": 2, "fingerprint": "lev|scope=ex:a"},
}


def test_canonical_form_sorts_keys_normalizes_decimals_and_writes_utc_times() -> None:
    assert canonical(EVENT) == (
        b'{"actor":"system:evaluation","alert_id":3,"details":{"fingerprint":"lev|scope=ex:a","limit_version":2},'
        b'"event_type":"opened","id":7,"observed_value":"4.15","occurred_at":"2026-03-04T12:00:00.000000+00:00",'
        b'"severity":"warning","state":"open","threshold":"3"}'
    )


def test_the_same_instant_in_another_zone_and_another_decimal_scale_hash_the_same() -> None:
    other = {
        **EVENT,
        "occurred_at": datetime(2026, 3, 4, 13, 0, tzinfo=timezone(timedelta(hours=1))),
        "observed_value": Decimal("4.15"),
        "threshold": Decimal("3"),
    }
    assert chain_hash(GENESIS_HASH, other) == chain_hash(GENESIS_HASH, EVENT)


def test_hash_is_sha256_of_previous_hash_and_canonical_content() -> None:
    expected = hashlib.sha256(GENESIS_HASH.encode() + canonical(EVENT)).hexdigest()
    assert chain_hash(GENESIS_HASH, EVENT) == expected
    assert chain_hash("1" * 64, EVENT) != expected


def test_decimal_text_handles_exponents_infinity_and_negative_zero() -> None:
    assert decimal_text(Decimal("1.5E+3")) == "1500"
    assert decimal_text(Decimal("Infinity")) == "Infinity"
    assert decimal_text(Decimal("-0.000")) == "0"
    assert decimal_text(None) is None
