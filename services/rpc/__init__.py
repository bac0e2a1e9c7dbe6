"""gRPC adapters: servicers and server wiring."""
