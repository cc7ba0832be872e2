"""Export a trained model for deployment: ``python ANIMAL-SPOT/export.py --model_path M.pk --onnx out.onnx``.

The ONNX file holds the network with its classifier head and softmax (the raw class
probabilities the prediction log prints), with dynamic batch and time axes, and the
model file's description (data options, classes, training options, thresholds,
temperature, provenance) as JSON in its metadata. ``predict.py --model_path out.onnx``
runs it with onnxruntime on the same windows.
"""

import argparse
import json
import sys
import warnings
from typing import List, Optional

if not __package__:                     # python ANIMAL-SPOT/<command>.py: a module of the package all the same
    import as_package
    __package__ = as_package.adopt_script(globals())

import torch
import torch.nn as nn

from .data.features import FeatureOptions
from .data.recording import AudioOptions
from .models.model_file import ModelFileError, load_model
from .utils.atomic import OutputError, atomic_write
from .utils import cli

OPSET = 17
SPEC_KEYS = ("encoder_opts", "classifier_opts", "data_opts", "classes", "train_opts", "thresholds", "temperature",
             "provenance")


class WithSoftmax(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return torch.softmax(self.model(x), dim=1)


def export_onnx(model_path: str, out: str, frames: Optional[int] = None) -> str:
    loaded = load_model(model_path)
    spec = loaded.spec
    audio = AudioOptions.describes(spec.data_opts)
    if audio and not spec.encoder_opts.get("trainable"):
        raise ValueError(f"{model_path}: a head on the foundation encoder {spec.backbone} runs the encoder's own "
                         "runtime and is not exported to ONNX; predict.py runs it")
    if audio:                                              # raw audio in (a trained BirdNET): (batch, samples)
        options = AudioOptions.from_data_opts(spec.data_opts)
        example = torch.rand(2, frames or int(round(options.window * options.sr)))
    else:
        options = FeatureOptions.from_data_opts(spec.data_opts, spec.min_max_norm)
        frames = frames or int(spec.train_opts.get("seq_frames") or 128)
        example = torch.rand(2, 1, frames, options.input_bins)
    for module in loaded.model.modules():
        if hasattr(module, "onnx_ready"):            # a network with an operation ONNX lacks computes it otherwise
            module.onnx_ready()
    network = WithSoftmax(loaded.model.eval())
    import onnx

    with atomic_write(out, "wb") as handle, warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        torch.onnx.export(network, (example,), handle, dynamo=False, opset_version=OPSET,
                          input_names=["input"], output_names=["probabilities"],
                          dynamic_axes={"input": {0: "batch", 1 if audio else 2: "time"},
                                        "probabilities": {0: "batch"}})
    graph = onnx.load(out)
    meta = {key: json.dumps(getattr(spec, key)) for key in SPEC_KEYS}
    meta["animal_spot_keys"] = json.dumps(list(SPEC_KEYS))
    for key, value in meta.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    with atomic_write(out, "wb") as handle:
        handle.write(graph.SerializeToString())
    return out


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Export an ANIMAL-SPOT model file to ONNX.")
    p.add_argument("--model_path", required=True, help="ANIMAL-SPOT.pk written by training")
    p.add_argument("--onnx", required=True, help="the ONNX file to write")
    p.add_argument("--frames", type=int, default=None, help="time frames of the example input (default: the "
                   "training segment); the time axis stays dynamic")
    args = p.parse_args(argv)

    def body(log):
        export_onnx(args.model_path, args.onnx, args.frames)
        log.info(f"Written {args.onnx}")
    return cli.run(body, "EXPORT", errors=(ModelFileError, OutputError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
