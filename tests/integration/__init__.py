"""Real processes on loopback: a nats-server, gRPC servers, the mesh, the CLI as a child."""
