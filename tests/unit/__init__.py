"""One process, no network: logic, solvers and in-process ONNX Runtime, by package."""
