"""Helpers shared by the tests: real services, apps served on loopback, polling with deadlines."""
