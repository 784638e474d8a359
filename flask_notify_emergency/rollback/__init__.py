"""rollback."""
