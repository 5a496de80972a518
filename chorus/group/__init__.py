"""A capability's members co-hosted: one process per group replica holding each member's own
model service and a fuser, answering a whole task in one message (`chorus serve group`)."""
