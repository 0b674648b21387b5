"""Triton model vae_decoder: DiT-space latents of every request in the batch, decoded in one pass."""

from collections import defaultdict

import torch
import triton_python_backend_utils as pb_utils

from reelforge.engine.triton.serving import load_stage_engine, to_torch


class TritonPythonModel:
    def initialize(self, args):
        self.engine = load_stage_engine()

    @torch.inference_mode()
    def execute(self, requests):
        latents = [to_torch(pb_utils.get_input_tensor_by_name(r, "LATENT")) for r in requests]
        groups = defaultdict(list)  # latent shape -> indices of requests
        for index, z in enumerate(latents):
            groups[tuple(z.shape[1:])].append(index)
        videos = [None] * len(requests)
        for members in groups.values():
            stacked = torch.cat([latents[i] for i in members]).to(self.engine.device)
            decoded = self.engine.local.decode(stacked).float().cpu()  # (B, 3, T, H, W)
            for index, part in zip(members, decoded.split([len(latents[i]) for i in members])):
                videos[index] = part
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("VIDEO", v.numpy())]) for v in videos]
