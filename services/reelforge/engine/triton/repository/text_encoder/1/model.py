"""Triton model text_encoder: the prompts of every request in the batch, encoded in one pass."""

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from reelforge.engine.text_encoder import TextEncoder
from reelforge.engine.triton.serving import StageSettings


class TritonPythonModel:
    def initialize(self, args):
        self.encoder = TextEncoder().to(StageSettings().device).eval()

    @torch.inference_mode()
    def execute(self, requests):
        prompts = [pb_utils.get_input_tensor_by_name(r, "PROMPT").as_numpy().reshape(-1) for r in requests]
        counts = [len(p) for p in prompts]
        text, mask = self.encoder([p.decode() for batch in prompts for p in batch])  # (P, L, 384), (P, L)
        responses = []
        for text_rows, mask_rows in zip(text.cpu().split(counts), mask.cpu().split(counts)):
            outputs = [pb_utils.Tensor("TEXT", text_rows.numpy()), pb_utils.Tensor("MASK", mask_rows.numpy().astype(np.bool_))]
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses
