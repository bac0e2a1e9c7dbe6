"""What a monitor collecting from the sandbox venues should have run, read from `collection_runs`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, text

# Every collection job over the default sandbox (two exchanges, one custodian, market data).
SANDBOX_JOBS = {
    "collect.positions.exchange-a",
    "collect.balances.exchange-a",
    "collect.positions.exchange-b",
    "collect.balances.exchange-b",
    "collect.custody.custodian-a",
    "collect.settlements.custodian-a",
    "collect.prices.market-data",
}


def succeeded(engine: Engine, since: datetime) -> dict[str, int]:
    """Succeeded runs per job started at or after ``since``."""
    with engine.connect() as conn:
        found = conn.execute(
            text(
                "SELECT job, count(*) FROM collection_runs WHERE started_at >= :since AND status = 'succeeded'"
                " GROUP BY job"
            ),
            {"since": since},
        )
        return {str(job): int(n) for job, n in found}
