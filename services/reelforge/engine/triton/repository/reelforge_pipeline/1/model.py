"""Triton model reelforge_pipeline: one job per request, run by the engine's own generate().

The same MiniEngine.generate as the in-process backend (so the same sampler, routing, noise and frame
conversion), with stages that call the text_encoder, dit and vae_decoder models through business-logic
scripting. Each job runs on a thread of its own, so the DiT calls of concurrent jobs meet in the dit
model's dynamic batcher. Step events stream back as decoupled responses; a cancelled request stops
between steps.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import triton_python_backend_utils as pb_utils

from reelforge.engine.interface import StepEvent
from reelforge.engine.triton.protocol import decode_request
from reelforge.engine.triton.serving import load_stage_engine, to_torch

MAX_CONCURRENT_JOBS = 32  # jobs in flight on this instance; more wait for a thread
NO_FRAMES = np.zeros((0, 0, 0, 3), dtype=np.uint8)


class Cancelled(Exception):
    pass


def _call(model, inputs, outputs):
    response = pb_utils.InferenceRequest(
        model_name=model, inputs=inputs, requested_output_names=list(outputs)
    ).exec()
    if response.has_error():
        raise RuntimeError(f"{model}: {response.error().message()}")
    return [to_torch(pb_utils.get_output_tensor_by_name(response, name)) for name in outputs]


class TritonStages:
    """engine.mini.EngineStages over the stage models of this server."""

    def encode(self, prompts):
        batch = np.array([[p.encode()] for p in prompts], dtype=np.object_)  # (P, 1)
        text, mask = _call("text_encoder", [pb_utils.Tensor("PROMPT", batch)], ("TEXT", "MASK"))
        return text, mask.bool()  # (P, L, 384), (P, L)

    def velocity(self, dit, x, t, text, mask):
        rows = x.shape[0]
        inputs = [
            pb_utils.Tensor("LATENT", x.float().cpu().numpy()),  # (B, Z, T/4, H/4, W/4)
            pb_utils.Tensor("TIME", t.float().cpu().numpy().reshape(rows, 1)),  # (B, 1)
            pb_utils.Tensor("TEXT", text.float().cpu().numpy()),  # (B, L, 384)
            pb_utils.Tensor("MASK", mask.cpu().numpy().astype(np.bool_)),  # (B, L)
            pb_utils.Tensor("DIT", np.full((rows, 1), dit, dtype=np.int32)),  # (B, 1)
        ]
        (v,) = _call("dit", inputs, ("VELOCITY",))
        return v.to(x.device)

    def decode(self, latents):
        (video,) = _call("vae_decoder", [pb_utils.Tensor("LATENT", latents.float().cpu().numpy())], ("VIDEO",))
        return video  # (B, 3, T, H, W)


def _response(phase, step, frames=NO_FRAMES, version=""):
    return pb_utils.InferenceResponse(output_tensors=[
        pb_utils.Tensor("PHASE", np.array([phase.encode()], dtype=np.object_)),
        pb_utils.Tensor("STEP", np.array([step], dtype=np.int32)),
        pb_utils.Tensor("FRAMES", frames),
        pb_utils.Tensor("VERSION", np.array([version.encode()], dtype=np.object_)),
    ])


class TritonPythonModel:
    def initialize(self, args):
        self.engine = load_stage_engine()  # routing, null prompts and shapes; the networks run in the stages
        self.stages = TritonStages()
        self.jobs = ThreadPoolExecutor(max_workers=MAX_CONCURRENT_JOBS, thread_name_prefix="job")

    def execute(self, requests):
        for request in requests:
            self.jobs.submit(self._run, request)
        return None

    def _run(self, request):
        sender = request.get_response_sender()

        def on_step(event: StepEvent):
            sender.send(_response(event.phase, event.step))
            if request.is_cancelled():
                raise Cancelled

        try:
            data = pb_utils.get_input_tensor_by_name(request, "REQUEST").as_numpy().reshape(-1)[0]
            job = decode_request(data)
            frames = self.engine.generate(job, on_step, stages=self.stages)
            version = f"{self.engine.name} {self.engine.version}"
            sender.send(_response("done", job.num_steps, frames, version),
                        flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        except Cancelled:
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        except Exception as exc:  # a bad request or a failed stage fails this job only
            error = pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
            sender.send(pb_utils.InferenceResponse(error=error), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def finalize(self):
        self.jobs.shutdown(wait=True, cancel_futures=True)
