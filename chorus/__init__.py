"""Chorus: many models, one answer, over NATS and gRPC."""

__version__ = "0.1.0"
