"""What the service does and how it talks to the outside: use cases, adapters, composition root."""
