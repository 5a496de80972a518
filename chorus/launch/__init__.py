"""Starting a mesh on one machine: a nats-server (alone or as a cluster) and a process per
service. Used by `chorus up`, the bench and the tests; the services never import it."""
