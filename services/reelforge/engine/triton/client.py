"""TritonEngine: the VideoEngine the GPU-stage worker uses when REELFORGE_ENGINE_BACKEND=triton.

One job is one streaming gRPC request to the reelforge_pipeline model. Step events come back as
responses and go to on_step, so progress and cancellation behave as with the in-process engine: when
on_step raises, the request is cancelled on the server (which stops between steps) and the exception
propagates untouched.
"""

from __future__ import annotations

import queue
import time
import uuid
from typing import Any

import numpy as np

from reelforge.engine.interface import GenerationRequest, StepCallback, StepEvent
from reelforge.engine.triton.protocol import PIPELINE_MODEL, encode_request

ENGINE_NAME = "reelforge-mini"
# The smallest job the engine takes: one step on a one-token latent. wait_ready runs it, so a worker
# reports ready only once every model of the pipeline has answered, and learns the weights version.
PROBE = GenerationRequest(prompt="probe", negative_prompt="", width=8, height=8, num_frames=4, fps=1,
                          num_steps=1, guidance_scale=1.0, seed=0)


class TritonEngineError(RuntimeError):
    """The server failed the job (the message is the server's), or the stream ended without frames."""


class TritonEngine:
    name = ENGINE_NAME

    def __init__(self, url: str, timeout_s: float = 600.0) -> None:
        """url: Triton's gRPC endpoint, host:port. timeout_s: the longest one job may run."""
        import tritonclient.grpc as grpcclient  # only the Triton backend needs the client

        self._grpc = grpcclient
        self.url = url
        self.timeout_s = timeout_s
        self.version = "unknown (no job served yet)"  # the server's weights version, set by each job

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the pipeline model is ready and has run the probe job; TritonEngineError after
        timeout_s (the server may still be loading its models when a worker starts)."""
        client = self._grpc.InferenceServerClient(self.url)
        deadline = time.monotonic() + timeout_s
        try:
            while not self._model_ready(client):
                if time.monotonic() > deadline:
                    raise TritonEngineError(f"{PIPELINE_MODEL} not ready at {self.url} after {timeout_s:.0f} s")
                time.sleep(0.5)
        finally:
            client.close()
        self.generate(PROBE, lambda _: None)

    def _model_ready(self, client: Any) -> bool:
        try:
            return bool(client.is_model_ready(PIPELINE_MODEL))
        except self._grpc.InferenceServerException:
            return False  # not listening yet

    def generate(self, request: GenerationRequest, on_step: StepCallback) -> np.ndarray:
        """Frames as uint8 (num_frames, height, width, 3), made by the server's pipeline."""
        responses: queue.Queue[tuple[Any, Any]] = queue.Queue()
        client = self._grpc.InferenceServerClient(self.url)
        payload = self._grpc.InferInput("REQUEST", [1], "BYTES")
        payload.set_data_from_numpy(np.array([encode_request(request)], dtype=np.object_))
        client.start_stream(callback=lambda result, error: responses.put((result, error)))
        finished = False
        try:
            client.async_stream_infer(PIPELINE_MODEL, [payload], request_id=uuid.uuid4().hex,
                                      enable_empty_final_response=True)
            frames = self._follow(responses, request.num_steps, on_step)
            finished = True
            return frames
        finally:
            client.stop_stream(cancel_requests=not finished)
            client.close()

    def _follow(self, responses: queue.Queue[tuple[Any, Any]], steps: int, on_step: StepCallback) -> np.ndarray:
        while True:
            try:
                result, error = responses.get(timeout=self.timeout_s)
            except queue.Empty:
                raise TritonEngineError(f"no response from {PIPELINE_MODEL} for {self.timeout_s:.0f} s") from None
            if error is not None:
                raise TritonEngineError(error.message())
            phase = result.as_numpy("PHASE")
            if phase is None:  # the empty final response: the stream ended without frames
                raise TritonEngineError(f"{PIPELINE_MODEL} ended the job without frames")
            name = phase[0].decode()
            if name == "done":
                self.version = result.as_numpy("VERSION")[0].decode().removeprefix(f"{self.name} ")
                return result.as_numpy("FRAMES")
            on_step(StepEvent(name, int(result.as_numpy("STEP")[0]), steps))  # type: ignore[arg-type]


def model_statistics(url: str, model: str) -> dict[str, Any]:
    """Triton's statistics of one model (its only version) as JSON: inference_count (rows),
    execution_count, inference_stats (queue, compute times), batch_stats (executions per batch size)."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        stats: dict[str, Any] = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
        return stats
    finally:
        client.close()
