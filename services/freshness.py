"""Data staleness per venue and kind, read from the small "current state" tables at scrape time.

``snapshot_heads`` (one row per account and kind) and ``price_latest`` (one row per venue and symbol)
are tiny, so this is cheap enough to run on every Prometheus scrape, and the value keeps growing while
a collection job is stuck instead of freezing at its last run. The stalest account or symbol of a venue
decides: limits are only as fresh as their oldest input.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

_STALENESS = text(
    """
    SELECT a.venue_id, h.kind, extract(epoch FROM now() - min(h.collected_at))
    FROM snapshot_heads h JOIN accounts a ON a.id = h.account_id
    GROUP BY a.venue_id, h.kind
    UNION ALL
    SELECT venue_id, 'prices', extract(epoch FROM now() - min(collected_at))
    FROM price_latest
    GROUP BY venue_id
    """
)


def staleness_seconds(session: Session) -> dict[tuple[str, ...], float]:
    """(venue, kind) -> seconds since the stalest current snapshot was collected."""
    return {(venue, kind): max(float(age), 0.0) for venue, kind, age in session.execute(_STALENESS)}


def staleness_source(sessions: sessionmaker[Session]) -> dict[tuple[str, ...], float]:
    with sessions() as session:
        return staleness_seconds(session)
