"""Data staleness is read from the current-state tables at scrape time: the stalest input decides."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from services import freshness

pytestmark = pytest.mark.integration


def test_staleness_per_venue_and_kind_is_the_stalest_account(db_session: Session) -> None:
    venue = f"venue-{uuid.uuid4().hex[:8]}"
    db_session.execute(text("INSERT INTO venues (id, kind) VALUES (:v, 'exchange')"), {"v": venue})
    accounts = [
        db_session.execute(
            text("INSERT INTO accounts (venue_id, external_id) VALUES (:v, :e) RETURNING id"), {"v": venue, "e": e}
        ).scalar_one()
        for e in ("a", "b")
    ]
    for account, age_s in zip(accounts, (30, 300), strict=True):
        db_session.execute(
            text(
                "INSERT INTO snapshot_heads (account_id, kind, collected_at, observed_at, run_id) "
                "VALUES (:a, 'positions', now() - make_interval(secs => :age), now(), 1)"
            ),
            {"a": account, "age": age_s},
        )
    db_session.execute(
        text(
            "INSERT INTO price_latest (venue_id, symbol, price, observed_at, collected_at, run_id) "
            "VALUES (:v, 'BTC-USDT', 1, now(), now() - interval '12 seconds', 1)"
        ),
        {"v": venue},
    )

    staleness = freshness.staleness_seconds(db_session)

    assert staleness[(venue, "positions")] == pytest.approx(300, abs=1)
    assert staleness[(venue, "prices")] == pytest.approx(12, abs=1)
