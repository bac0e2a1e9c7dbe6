"""Sandbox venues: simulated exchanges, custodians and market data on loopback, for tests and demos.

The monitor never imports this package (an import-linter contract and a test enforce it); it talks
to these venues only over HTTP and gRPC, exactly as it talks to real ones.
"""

from __future__ import annotations

from sandbox.config import SandboxConfig
from sandbox.runner import RunningSandbox, start
from sandbox.world import SandboxWorld

__all__ = ["RunningSandbox", "SandboxConfig", "SandboxWorld", "start"]
