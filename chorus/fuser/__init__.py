"""The fuser: merges member models' answers into one and says why."""
