"""The `model.py` of every Triton model the bench serves (see triton.py), one file for all.

Run by Triton's Python backend stub in the Triton virtualenv (numpy<2), never imported by
Chorus: it imports nothing from Chorus. What a model does comes from its config.pbtxt's
parameters:

- `role` `member`: one ONNX Runtime session; its `onnx_output` (default `probabilities`)
  under the config's one output.
- `role` `vote`: the mean of its inputs (the members' probabilities), with the argmax.
- `role` `whole`: every session in `models` on the same rows, then the same vote.
- `models`: a JSON list of ONNX file paths (`member` takes one).

Each session runs on one ONNX Runtime thread, as the bench's bare path and the model
services do. With dynamic batching on, `execute` gets every request the batcher gathered;
their rows run as one batch and the answer is split back, one response per request.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.role = params["role"]
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        self.fetch = [params.get("onnx_output", "probabilities")]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.sessions = [
            ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
            for path in json.loads(params.get("models", "[]"))
        ]

    def execute(self, requests: list[Any]) -> list[Any]:
        import triton_python_backend_utils as pb_utils

        arrays = [
            [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in self.inputs]
            for r in requests
        ]
        sizes = [a[0].shape[0] for a in arrays]
        columns = [np.concatenate([a[k] for a in arrays]) for k in range(len(self.inputs))]
        if self.role == "member":
            session = self.sessions[0]
            feed = {session.get_inputs()[0].name: columns[0]}
            answers = [session.run(self.fetch, feed)[0]]
        else:
            if self.role == "whole":
                columns = [
                    s.run(self.fetch, {s.get_inputs()[0].name: columns[0]})[0]
                    for s in self.sessions
                ]
            probs = np.mean(columns, axis=0, dtype=np.float32)
            answers = [probs, probs.argmax(axis=1).astype(np.int64).reshape(-1, 1)]
        cuts = np.cumsum(sizes)[:-1]
        pieces = [np.split(answer, cuts) for answer in answers]
        return [
            pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor(name, np.ascontiguousarray(piece[i]))
                    for name, piece in zip(self.outputs, pieces, strict=True)
                ]
            )
            for i in range(len(requests))
        ]
