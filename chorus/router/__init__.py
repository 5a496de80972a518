"""The router: takes tasks over gRPC, fans them out to member models, has the fuser merge."""
