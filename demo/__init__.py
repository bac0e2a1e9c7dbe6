"""`risk-monitor demo`: the sandbox venues, a real monitor and scripted trading scenarios in one command.

The monitor's packages never import this one (import-linter contract); it reaches them the other way
round: it starts a `services.app.Monitor`, drives the sandbox through its HTTP control surface and
watches the monitor only through gRPC and /metrics, like any other client.
"""
