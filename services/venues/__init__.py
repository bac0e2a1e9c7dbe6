"""Clients for the venues the monitor watches: exchanges and custodians (REST), market data (gRPC).

The wire contract is docs/venue-api.md; payload validation lives in `models.payloads`.
"""
