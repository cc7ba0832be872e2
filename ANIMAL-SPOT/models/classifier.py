"""Pooling + one linear layer: ``[B, C, H, W] -> [B, num_classes]`` (logits)."""

import torch
import torch.nn as nn

DefaultClassifierOpts = {"input_channels": 512, "pooling": "avg", "num_classes": 2}


class Classifier(nn.Module):
    def __init__(self, opts: dict = DefaultClassifierOpts):
        super().__init__()
        opts = {**DefaultClassifierOpts, **opts}
        if opts["pooling"] not in ("avg", "max"):
            raise ValueError(f"pooling must be 'avg' or 'max', not {opts['pooling']!r}")
        self._opts = opts
        self.linear = nn.Linear(opts["input_channels"], opts["num_classes"])
        self.hidden_layer_1 = None   # pooled features of the last forward (latent extraction)
        self.output_layer = None     # logits of the last forward

    def model_opts(self) -> dict:
        return dict(self._opts)

    def get_layer_output(self) -> dict:
        """Pooled features (``hidden_layer_1``) and logits (``output_layer``) of the last forward."""
        return {"hidden_layer_1": self.hidden_layer_1, "output_layer": self.output_layer}

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)
        return flat.mean(dim=2) if self._opts["pooling"] == "avg" else flat.amax(dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.pool(x)
        logits = self.linear(hidden)
        if not (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()
                or torch.onnx.is_in_onnx_export()):
            self.hidden_layer_1, self.output_layer = hidden.detach(), logits.detach()   # not the graph
        return logits
