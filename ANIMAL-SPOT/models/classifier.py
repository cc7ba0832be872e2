"""Pooling + a head: ``[B, C, H, W] -> [B, num_classes]`` (logits).

The original's head is one linear layer (``head: linear``). Heads fitted on stored
embeddings (``embed.py fit``) may add a hidden layer (``head: mlp``, ``hidden`` units) and
round the pooled features to float16 first (``round_float16``), as the embedding store
holds them, so the head sees in prediction exactly what it was fitted on.
"""

import torch
import torch.nn as nn

DefaultClassifierOpts = {"input_channels": 512, "pooling": "avg", "num_classes": 2}


class Classifier(nn.Module):
    def __init__(self, opts: dict = DefaultClassifierOpts):
        super().__init__()
        opts = {**DefaultClassifierOpts, **opts}
        if opts["pooling"] not in ("avg", "max"):
            raise ValueError(f"pooling must be 'avg' or 'max', not {opts['pooling']!r}")
        head = opts.get("head", "linear")
        if head not in ("linear", "mlp"):
            raise ValueError(f"head must be 'linear' or 'mlp', not {head!r}")
        self._opts = opts
        self.round_float16 = bool(opts.get("round_float16", False))
        features = opts["input_channels"]
        if head == "mlp":
            self.hidden = nn.Linear(features, int(opts["hidden"]))
            features = int(opts["hidden"])
        self.linear = nn.Linear(features, opts["num_classes"])
        self.hidden_layer_1 = None   # pooled features of the last forward (latent extraction, embeddings)
        self.output_layer = None     # logits of the last forward

    def model_opts(self) -> dict:
        return dict(self._opts)

    def get_layer_output(self) -> dict:
        """Pooled features (``hidden_layer_1``) and logits (``output_layer``) of the last forward."""
        return {"hidden_layer_1": self.hidden_layer_1, "output_layer": self.output_layer}

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)
        return flat.mean(dim=2) if self._opts["pooling"] == "avg" else flat.amax(dim=2)

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        """Logits from pooled features (float16-rounded first where the head was fitted so)."""
        z = pooled.half().to(pooled.dtype) if self.round_float16 else pooled
        if hasattr(self, "hidden"):
            z = torch.relu(self.hidden(z))
        return self.linear(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.pool(x)
        logits = self.head(hidden)
        if not (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()
                or torch.onnx.is_in_onnx_export()):
            self.hidden_layer_1, self.output_layer = hidden.detach(), logits.detach()   # not the graph
        return logits
