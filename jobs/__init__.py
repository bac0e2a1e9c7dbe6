"""Thin scheduled entry points over the services."""
