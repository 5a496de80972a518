"""The demo repository: its datasets and the training that writes its ONNX members.

Top layer: serving never imports it; `chorus models build`, the bench and the tests do."""
