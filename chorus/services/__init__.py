"""The model service: one ONNX model behind NATS and KServe v2 gRPC."""
