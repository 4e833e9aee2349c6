"""One exported network, run by ONNX Runtime or OpenVINO on the CPU (no PyTorch).

Both are optional extras (``pip install 'lineclear[onnx]'`` / ``'lineclear[openvino]'``); a runtime that is
not installed is one clear error naming the extra. OpenVINO is asked for f32 inference precision: on CPUs
with bfloat16 or AMX units its default would be bf16, which changes the maps beyond the export's tolerance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lineclear.errors import LineclearError


class Graph:
    """``graph({name: array})`` → list of output arrays; ``threads`` intra-op threads (the checker
    parallelises across views instead, as it does with PyTorch)."""

    def __init__(self, path: str | Path, fmt: str, threads: int = 1) -> None:
        self.path = Path(path)
        self.format = fmt
        if fmt == "onnx":
            try:
                import onnxruntime as ort
            except ImportError:
                raise LineclearError(f"{self.path}: running an ONNX export needs onnxruntime "
                                     "(pip install 'lineclear[onnx]')") from None
            so = ort.SessionOptions()
            so.intra_op_num_threads = max(1, int(threads))
            so.inter_op_num_threads = 1
            so.log_severity_level = 3
            try:
                self._session = ort.InferenceSession(str(self.path), so, providers=["CPUExecutionProvider"])
            except Exception as exc:  # onnxruntime raises its own exception types for a bad file
                raise LineclearError(f"{self.path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0][:200]})") from None
            self.inputs = [i.name for i in self._session.get_inputs()]
            self.outputs = [o.name for o in self._session.get_outputs()]
        elif fmt == "openvino":
            try:
                import openvino as ov
            except ImportError:
                raise LineclearError(f"{self.path}: running an OpenVINO export needs openvino "
                                     "(pip install 'lineclear[openvino]')") from None
            try:
                core = ov.Core()
                model = core.read_model(str(self.path))
                compiled = core.compile_model(model, "CPU", {
                    "INFERENCE_NUM_THREADS": max(1, int(threads)), "INFERENCE_PRECISION_HINT": "f32",
                    "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1})
            except Exception as exc:  # OpenVINO raises RuntimeError with a long message
                raise LineclearError(f"{self.path}: OpenVINO cannot load it ({str(exc).splitlines()[0][:200]})") from None
            self._request = compiled.create_infer_request()
            self.inputs = [i.get_any_name() for i in compiled.inputs]
            self.outputs = [o.get_any_name() for o in compiled.outputs]
        else:
            raise LineclearError(f"{self.path}: unknown export format {fmt!r}")

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        missing = set(self.inputs) - set(feeds)
        if missing:
            raise LineclearError(f"{self.path}: graph inputs {sorted(missing)} not given")
        feeds = {k: np.ascontiguousarray(v, np.float32) for k, v in feeds.items() if k in self.inputs}
        if self.format == "onnx":
            return [np.asarray(o) for o in self._session.run(self.outputs, feeds)]
        res = self._request.infer(feeds)
        return [np.array(res[self._request.model_outputs[i]]) for i in range(len(self.outputs))]
