"""The core every Chorus service shares: wire formats, configuration, NATS and gRPC plumbing,
the member-call mechanism, metrics. Nothing here imports a service package."""
