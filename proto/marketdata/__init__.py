"""Generated stubs for the ecosystem market-data service (see proto/generate.sh)."""
