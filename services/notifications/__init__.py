"""Alert notifications: the outbox dispatcher, its channels and the Alertmanager re-send job."""
