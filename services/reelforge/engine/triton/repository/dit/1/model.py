"""Triton model dit: one DiT velocity evaluation for every row the dynamic batcher gathered.

Rows are grouped by (DiT key, latent shape) and each group runs as one forward pass: the batcher never
mixes latent shapes, and a teacher row and a student row cannot share a pass.
"""

from collections import defaultdict

import torch
import triton_python_backend_utils as pb_utils

from reelforge.engine.triton.serving import load_stage_engine, to_torch

INPUTS = ("LATENT", "TIME", "TEXT", "MASK", "DIT")


class TritonPythonModel:
    def initialize(self, args):
        self.engine = load_stage_engine()

    @torch.inference_mode()
    def execute(self, requests):
        rows = [{name: to_torch(pb_utils.get_input_tensor_by_name(r, name)) for name in INPUTS} for r in requests]
        groups = defaultdict(list)  # (dit key, latent shape) -> indices of requests
        velocities = [None] * len(requests)
        for index, row in enumerate(rows):
            keys = row["DIT"].unique()
            if len(keys) != 1:
                velocities[index] = pb_utils.TritonError("every row of one request must name the same DIT")
                continue
            groups[(int(keys[0]), tuple(row["LATENT"].shape[1:]))].append(index)
        for (key, _), members in groups.items():
            if key not in self.engine.dits:
                for index in members:
                    velocities[index] = pb_utils.TritonError(f"no DiT with key {key} in the served weights")
                continue
            try:  # a failing group fails its own requests only, not the rest of the batch
                stacked = {name: torch.cat([rows[i][name] for i in members]).to(self.engine.device) for name in INPUTS}
                v = self.engine.local.velocity(
                    key, stacked["LATENT"], stacked["TIME"][:, 0], stacked["TEXT"], stacked["MASK"]
                )  # (B, Z, T/4, H/4, W/4)
            except Exception as exc:
                for index in members:
                    velocities[index] = pb_utils.TritonError(f"dit failed: {type(exc).__name__}: {exc}")
                continue
            for index, part in zip(members, v.float().cpu().split([len(rows[i]["DIT"]) for i in members])):
                velocities[index] = part
        return [
            pb_utils.InferenceResponse(error=v) if isinstance(v, pb_utils.TritonError)
            else pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("VELOCITY", v.numpy())])
            for v in velocities
        ]
