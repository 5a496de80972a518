"""The `chorus` command line: starting the mesh, sending tasks, managing models, reports.

Top layer: it may import any runtime package; nothing below imports it."""
