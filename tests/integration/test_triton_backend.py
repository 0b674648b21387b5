"""The engine behind a real tritonserver (from the nvidia-pytriton wheel), started by the stack with
engine_backend=triton: exact frames alone and batched, real batching, cancel, bad input, metrics, and a
whole job through the platform.

Both backends load one weights folder whose DiTs are perturbed away from their zero-initialised output
layers (tests/engine/perturbed.py): under the default init a mixed-up batch would go unseen.
"""

from __future__ import annotations

import io
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import np_to_triton_dtype

from reelforge.devstack.stack import Stack
from reelforge.engine.interface import GenerationRequest, StepEvent
from reelforge.engine.mini import MiniEngine
from reelforge.engine.triton.client import TritonEngine, TritonEngineError, model_statistics
from reelforge.postprocess.media import encode_mp4
from tests.engine.perturbed import DISTILLED_GUIDANCE, STUDENT_STEPS, perturbed_weights
from tests.integration.conftest import new_tenant_key, running_stack, wait_terminal

pytestmark = pytest.mark.integration

REQUEST = GenerationRequest(prompt="a red fox running through snow", negative_prompt="", width=64, height=64,
                            num_frames=16, fps=8, num_steps=3, guidance_scale=2.0, seed=1234)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return perturbed_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def triton_stack(tmp_path_factory: pytest.TempPathFactory, weights: Path) -> Iterator[Stack]:
    yield from running_stack(tmp_path_factory, "triton-stack", {"engine_backend": "triton", "gpu_concurrency": 2},
                             REELFORGE_ENGINE_WEIGHTS=str(weights))


@pytest.fixture(scope="module")
def local_engine(weights: Path) -> MiniEngine:
    return MiniEngine(checkpoint=weights)


@pytest.fixture(scope="module")
def remote(triton_stack: Stack) -> TritonEngine:
    return TritonEngine(triton_stack.info["triton_grpc_url"])


def ignore(event: StepEvent) -> None:
    pass


def dit_batches(stack: Stack) -> dict[int, int]:
    """Executions of the dit model so far, by batch size (Triton's own statistics)."""
    stats = model_statistics(stack.info["triton_grpc_url"], "dit")
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats.get("batch_stats", [])}


def metrics(stack: Stack) -> dict[str, float]:
    with urllib.request.urlopen(stack.info["triton_metrics_url"], timeout=5) as response:
        text = response.read().decode()
    return {name: float(value) for name, value in
            (line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))}


def close(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to float noise: a rounding flip of one level on under 1 % of the values."""
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return a.shape == b.shape and int(diff.max()) <= 1 and float((diff > 0).mean()) < 0.01


def decode_mp4(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(np.int16)


def through_h264(frames: np.ndarray, path: Path) -> np.ndarray:
    encode_mp4(frames, REQUEST.fps, path, {})
    return decode_mp4(path.read_bytes())


def run_concurrently(engine: TritonEngine, requests: list[GenerationRequest]) -> list[np.ndarray]:
    results: list[Any] = [None] * len(requests)
    start = threading.Barrier(len(requests))

    def run(index: int) -> None:
        start.wait()
        try:
            results[index] = engine_copy(engine).generate(requests[index], ignore)
        except Exception as exc:  # surfaced by the assertion below
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert all(isinstance(r, np.ndarray) for r in results), results
    return results


def engine_copy(engine: TritonEngine) -> TritonEngine:
    return TritonEngine(engine.url)  # one per thread, as one per GPU-worker process


def test_triton_frames_equal_in_process_frames_alone_and_batched_with_other_jobs(
    triton_stack: Stack, remote: TritonEngine, local_engine: MiniEngine
) -> None:
    other_seed = replace(REQUEST, seed=99)
    other_prompt = replace(REQUEST, prompt="a blue whale under the sea")
    student = replace(REQUEST, num_steps=STUDENT_STEPS, guidance_scale=DISTILLED_GUIDANCE, seed=5)
    other_shape = replace(REQUEST, width=128, seed=7)
    jobs = [REQUEST, other_seed, other_prompt, student, other_shape]

    expected = [local_engine.generate(job, ignore) for job in jobs]
    alone = remote.generate(REQUEST, ignore)
    before = dit_batches(triton_stack)
    batched = run_concurrently(remote, jobs)
    after = dit_batches(triton_stack)

    assert close(alone, expected[0]), "Triton alone must give the in-process engine's frames"
    for job, got, want in zip(jobs, batched, expected):
        assert close(got, want), f"{job} differs from the in-process engine when batched"
    # Each job is its own: no row of one job leaked into another's frames.
    for other in batched[1:4]:
        assert np.abs(batched[0].astype(np.int16) - other).mean() > 5
    assert batched[4].shape == (16, 64, 128, 3)
    grown = {size: after.get(size, 0) - before.get(size, 0) for size in after}
    assert any(size >= 2 and count > 0 for size, count in grown.items()), f"no batched dit execution: {grown}"


def test_cancel_from_on_step_stops_the_job_on_the_server(triton_stack: Stack, remote: TritonEngine) -> None:
    class Stop(Exception):
        pass

    def stop_after_first_step(event: StepEvent) -> None:
        if event.phase == "denoising" and event.step == 1:
            raise Stop

    steps = 12
    before = metrics(triton_stack)['nv_inference_count{model="dit",version="1"}']
    with pytest.raises(Stop):
        remote.generate(replace(REQUEST, num_steps=steps, seed=3), stop_after_first_step)
    threading.Event().wait(3.0)  # a job that kept running would go on calling the dit model
    after = metrics(triton_stack)
    # A whole run is 2 * steps dit calls (guidance on); a cancelled one stops after a step or two.
    assert after['nv_inference_count{model="dit",version="1"}'] - before < steps
    # The server still serves the next job.
    assert remote.generate(replace(REQUEST, num_steps=1), ignore).shape == (16, 64, 64, 3)


def test_bad_request_fails_that_job_with_the_engine_message(remote: TritonEngine) -> None:
    with pytest.raises(TritonEngineError, match="multiples of 8"):
        remote.generate(replace(REQUEST, width=60), ignore)
    assert remote.generate(replace(REQUEST, num_steps=1), ignore).shape == (16, 64, 64, 3)


def test_metrics_endpoint_serves_queue_compute_and_batch_figures(triton_stack: Stack) -> None:
    figures = metrics(triton_stack)
    for model in ("text_encoder", "dit", "vae_decoder", "reelforge_pipeline"):
        assert f'nv_inference_request_success{{model="{model}",version="1"}}' in figures
    dit = {name.split("{")[0]: value for name, value in figures.items() if 'model="dit"' in name}
    assert dit["nv_inference_queue_duration_us"] > 0 and dit["nv_inference_compute_infer_duration_us"] > 0
    # inference_count / exec_count is the mean batch size: above 1 once jobs have been batched
    assert dit["nv_inference_count"] > dit["nv_inference_exec_count"] > 0


def test_whole_job_through_the_platform_with_the_triton_backend(
    triton_stack: Stack, local_engine: MiniEngine, tmp_path: Path
) -> None:
    served = metrics(triton_stack)['nv_inference_request_success{model="reelforge_pipeline",version="1"}']
    key = new_tenant_key(triton_stack, "triton-tenant")
    with httpx.Client(base_url=triton_stack.info["gateway_url"], headers={"Authorization": f"Bearer {key}"},
                      timeout=30) as api:
        created = api.post("/v1/videos", json={"prompt": REQUEST.prompt, "size": "64x64", "seconds": "2",
                                               "fps": 8, "num_steps": 3, "guidance_scale": 2.0, "seed": 1234})
        assert created.status_code == 200, created.text
        done = wait_terminal(api, created.json()["id"], timeout=240)
        assert done["status"] == "completed", done
        assert done["progress"] == 100 and done["step"] == 3
        assert {"encoding_prompt", "denoising", "decoding", "encoding", "uploading"} <= set(done["timings"])
        mp4 = api.get(f"/v1/videos/{done['id']}/content")
    assert mp4.status_code == 200
    frames = decode_mp4(mp4.content)
    assert frames.shape == (16, 64, 64, 3)
    # H.264 (4:2:0) smears these noise-like frames, so the in-process frames go through the same encoder:
    # the platform's video is near this job's and far from another seed's.
    want = through_h264(local_engine.generate(REQUEST, ignore), tmp_path / "want.mp4")
    other = through_h264(local_engine.generate(replace(REQUEST, seed=99), ignore), tmp_path / "other.mp4")
    assert np.abs(frames - want).mean() < 0.1 * np.abs(frames - other).mean()
    after = metrics(triton_stack)['nv_inference_request_success{model="reelforge_pipeline",version="1"}']
    assert after > served, "the job must have run on Triton"


def test_dit_model_refuses_an_unknown_dit_key_with_a_message(triton_stack: Stack) -> None:
    client = grpcclient.InferenceServerClient(triton_stack.info["triton_grpc_url"])
    arrays = {"LATENT": np.zeros((1, 16, 4, 16, 16), np.float32), "TIME": np.ones((1, 1), np.float32),
              "TEXT": np.zeros((1, 32, 384), np.float32), "MASK": np.ones((1, 32), np.bool_),
              "DIT": np.full((1, 1), 7, np.int32)}
    inputs = []
    for name, array in arrays.items():
        tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    try:
        with pytest.raises(grpcclient.InferenceServerException, match="no DiT with key 7"):
            client.infer("dit", inputs)
        arrays["DIT"][:] = 0
        for tensor, array in zip(inputs, arrays.values()):
            tensor.set_data_from_numpy(array)
        assert client.infer("dit", inputs).as_numpy("VELOCITY").shape == (1, 16, 4, 16, 16)
    finally:
        client.close()
