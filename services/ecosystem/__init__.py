"""Optional integration with the trading ecosystem: Redis service registry, configuration service."""
