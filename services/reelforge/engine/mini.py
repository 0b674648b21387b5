"""reelforge-mini: the built-in text-to-video engine, small enough to serve from a CPU.

prompt -> MiniLM token states -> Euler flow-matching sampling of a latent video DiT (with classifier-free
guidance) -> causal 3D VAE decode -> uint8 frames.

Weights: a folder written by `reelforge model` (docs/model.md); by default the folder shipped in the
package (engine/weights) when it holds a manifest, else the architecture at a fixed random seed (no
trained set meets the model's quality targets yet, so none is shipped). A request whose step count
has a distilled student (1, 2 or 4 steps) and whose guidance_scale is the one the students were
distilled at runs that student, one DiT pass a step; any other step count or guidance runs the teacher
with classifier-free guidance, so every request is honoured as asked. `random_init=True` forces the fixed-seed initialisation (tests and benchmarks of the
serving path that must not depend on shipped files).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from reelforge.engine.checkpoints import MANIFEST, is_weights_path, load_engine_weights
from reelforge.engine.dit import DiT_Mini, VideoDiT
from reelforge.engine.interface import GenerationRequest, StepCallback, StepEvent
from reelforge.engine.sampler import sample
from reelforge.engine.text_encoder import TextEncoder
from reelforge.engine.vae import VAE_Mini, VideoVAE

INIT_SEED = 0  # weights seed for random_init; identical across workers and restarts
# Students sample ancestrally: each step re-noises the step's clean latent with fresh noise from the
# request's seed (engine/sampler.sample). Over the eval's 200 prompts section 11's 4-step student's Frechet
# distance fell 1.09 -> 0.87, its speed accuracy rose 52.9 -> 64.3 %, shape 40.5 -> 43.0 %, direction
# 77.0 -> 78.5 %, colour 88.5 -> 87.5 % (docs/model.md, section 11). The teacher stays deterministic Euler.
STUDENT_RENOISE = 1.0
FLOW_SHIFT = 1.0  # time shift of the sampling grids without weights; a weights folder records its own
RANDOM_INIT_VERSION = "0.1.0-random-init"
SHIPPED_WEIGHTS = Path(__file__).parent / "weights"
TEACHER = 0  # DiT key of the teacher; a student's key is its step count


class EngineStages(Protocol):
    """Where the three networks run: in this process (LocalStages), or behind Triton, where the pipeline
    model runs this same `generate` and its stages call the text_encoder, dit and vae_decoder models.
    Every stage takes and returns a batch, so a server may stack rows of different jobs."""

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """prompts -> (text (P, L, 384), mask (P, L) bool)."""
        ...

    def velocity(
        self, dit: int, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """One DiT pass of the DiT keyed `dit`: x (B, Z, T/4, H/4, W/4), t (B,) -> velocity like x."""
        ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """DiT-space latents (B, Z, T/4, H/4, W/4) -> video (B, 3, T, H, W) in ~[-1, 1]."""
        ...


class LocalStages:
    """The engine's own modules, in this process."""

    def __init__(self, engine: MiniEngine) -> None:
        self.engine = engine

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.engine.text_encoder(prompts)  # (P, L, 384), (P, L)

    def velocity(
        self, dit: int, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        return self.engine.dits[dit](x, t, text, mask)  # (B, Z, T/4, H/4, W/4)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.engine.vae
        return vae.decode(vae.denormalize(latents))  # (B, 3, T, H, W)


class MiniEngine:
    name = "reelforge-mini"

    def __init__(
        self,
        device: str = "cpu",
        threads: int = 0,
        checkpoint: Path | None = None,
        random_init: bool = False,
    ) -> None:
        """threads > 0 sets torch's intra-op threads for this process; 0 keeps torch's default.
        checkpoint: a weights folder or one DiT file in it (safetensors and a manifest, written by
        engine/checkpoints.py), or a torch.save'd dict {"dit": ..., "vae": ..., "version": str (optional)};
        None serves the shipped weights when there are any."""
        if threads > 0:
            torch.set_num_threads(threads)
        self.device = torch.device(device)
        self.students: dict[int, VideoDiT] = {}
        self.distilled_guidance: float | None = None
        self.flow_shift = FLOW_SHIFT
        # Rescaled-guidance phi of guided (teacher) sampling; a weights folder records its own.
        self.guidance_rescale = 0.0
        if checkpoint is None and not random_init and (SHIPPED_WEIGHTS / MANIFEST).is_file():
            checkpoint = SHIPPED_WEIGHTS
        if checkpoint is not None and is_weights_path(Path(checkpoint)):
            weights = load_engine_weights(Path(checkpoint))
            self.students, self.distilled_guidance = weights.students, weights.distilled_guidance
            self.vae, self.version, self.flow_shift = weights.vae, weights.version, weights.flow_shift
            self.guidance_rescale = weights.guidance_rescale
            # The teacher serves every request no student matches; a folder of students only falls back
            # to its most-step student (guidance then cannot be changed).
            self.dit: VideoDiT = weights.teacher or weights.students[max(weights.students)]
        else:
            with torch.random.fork_rng(devices=[]):  # leaves the caller's global RNG untouched
                torch.manual_seed(INIT_SEED)
                self.dit = DiT_Mini()
                self.vae: VideoVAE = VAE_Mini()
            self.version = RANDOM_INIT_VERSION
            if checkpoint is not None:
                state = torch.load(checkpoint, map_location="cpu", weights_only=True)
                self.dit.load_state_dict(state["dit"])
                self.vae.load_state_dict(state["vae"])
                self.version = str(state.get("version", Path(checkpoint).stem))
        self.text_encoder = TextEncoder()
        for module in (self.dit, self.vae, self.text_encoder, *self.students.values()):
            module.to(self.device).eval().requires_grad_(False)
        self.dits: dict[int, VideoDiT] = {TEACHER: self.dit, **self.students}
        self.local = LocalStages(self)

    def dit_key_for(self, request: GenerationRequest) -> tuple[int, float]:
        """(key into self.dits, guidance scale to sample it at) for a request: its step count's student
        when the requested guidance is the one distilled into it, else the teacher at that guidance."""
        if request.num_steps in self.students and self.distilled_guidance is not None:
            if abs(request.guidance_scale - self.distilled_guidance) < 1e-6:
                return request.num_steps, 1.0  # guidance is in its weights: one conditional pass a step
        return TEACHER, request.guidance_scale

    def model_for(self, request: GenerationRequest) -> tuple[VideoDiT, float]:
        """(DiT, guidance scale to sample it at) for a request (see dit_key_for)."""
        key, guidance = self.dit_key_for(request)
        return self.dits[key], guidance

    @torch.inference_mode()
    def generate(
        self, request: GenerationRequest, on_step: StepCallback, stages: EngineStages | None = None
    ) -> np.ndarray:
        """Frames as uint8 (num_frames, height, width, 3). Exceptions from on_step propagate untouched.
        stages: where the networks run; this process's modules unless Triton's pipeline passes its own."""
        stages = stages or self.local
        steps = request.num_steps
        latent_shape = self._latent_shape(request)

        key, guidance = self.dit_key_for(request)
        on_step(StepEvent("encoding_prompt", 0, steps))
        cond, uncond = self._encode_prompts(request, guidance, self.dits[key], stages)

        generator = torch.Generator(device="cpu").manual_seed(request.seed)
        noise = torch.randn((1, *latent_shape), generator=generator).to(self.device)  # (1, Z, T/4, H/4, W/4)

        def velocity(x: torch.Tensor, t: torch.Tensor, conditional: bool) -> torch.Tensor:
            text, mask = cond if conditional else uncond
            return stages.velocity(key, x, t, text, mask)  # (1, Z, T/4, H/4, W/4)

        on_step(StepEvent("denoising", 0, steps))
        latents = sample(
            velocity,
            noise,
            num_steps=steps,
            guidance_scale=guidance,
            shift=self.flow_shift,
            on_step=lambda i: on_step(StepEvent("denoising", i, steps)),
            guidance_rescale=self.guidance_rescale,
            renoise=0.0 if key == TEACHER else STUDENT_RENOISE,
            generator=generator,
        )  # (1, Z, T/4, H/4, W/4)

        on_step(StepEvent("decoding", steps, steps))
        video = stages.decode(latents)  # (1, 3, T, H, W) in ~[-1, 1]
        frames = ((video[0].float() + 1) / 2).clamp(0, 1).mul(255).round()  # (3, T, H, W)
        return frames.permute(1, 2, 3, 0).to(torch.uint8).cpu().numpy()  # (T, H, W, 3)

    def _latent_shape(self, request: GenerationRequest) -> tuple[int, int, int, int]:
        # The DiT's 2x2 patches on a 4x-downsampled latent need sizes that are multiples of 8.
        if request.width % 8 or request.height % 8:
            raise ValueError(f"width and height must be multiples of 8, got {request.width}x{request.height}")
        if request.num_frames % self.vae.temporal_factor or request.num_frames <= 0:
            raise ValueError(f"num_frames must be a positive multiple of 4, got {request.num_frames}")
        return self.vae.latent_shape(request.num_frames, request.height, request.width)

    def _encode_prompts(
        self, request: GenerationRequest, guidance: float, dit: VideoDiT, stages: EngineStages
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """((text, mask) for the prompt, (text, mask) for the unconditional pass): the negative prompt
        when one is given, else the DiT's learned null prompt. The negative is only encoded if used."""
        use_negative = guidance > 1.0 and bool(request.negative_prompt.strip())
        prompts = [request.prompt, request.negative_prompt] if use_negative else [request.prompt]
        text, mask = stages.encode(prompts)  # (P, L, 384), (P, L)
        cond = (text[:1], mask[:1])
        uncond = (text[1:], mask[1:]) if use_negative else dit.null_prompt(1)
        return cond, uncond


def load_engine(
    device: str = "cpu", threads: int = 0, checkpoint: Path | None = None, random_init: bool = False
) -> MiniEngine:
    return MiniEngine(device=device, threads=threads, checkpoint=checkpoint, random_init=random_init)
