"""Run a trained model over recordings: ``python ANIMAL-SPOT/predict.py --model_path ... --input_file ...``.

The network and its preprocessing are rebuilt from the model file alone. A recording is
read in blocks; each block's spectrogram frames are computed once and cut into windows,
which go through the network in batches (inference mode, BatchNorm folded into the
convolutions, channels-last memory format where the backbone gains from it). Per file,
``<output_dir>/<name>_predict_output.log`` holds the original's header and one record
per window.
"""

import argparse
import logging
import os
import pickle
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, List, Optional, Tuple

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from data.audiodataset import SignalReader, iter_window_batches, window_geometry
from data.transforms import AudioFileError, FeatureOptions
from models import backbones
from models.model_file import LoadedModel, ModelFileError, load_model
from utils.logging import close_logger, setup_logger


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Detect / classify calls in recordings with an ANIMAL-SPOT model.")
    a = p.add_argument
    a("-d", "--debug", action="store_true", help="log at DEBUG level (adds per-window extract lines)")
    a("--model_path", type=str, default=None, help="ANIMAL-SPOT.pk written by training")
    a("--checkpoint_path", type=str, default=None, help="accepted for compatibility; not used")
    a("--log_dir", type=str, default=None, help="write PREDICT.log here")
    a("--output_dir", type=str, default=None, help="per-file prediction logs, latent features, PDFs")
    a("--sequence_len", type=float, default=2, help="window length in seconds")
    a("--hop", type=float, default=1, help="window step in seconds")
    a("--threshold", type=float, default=0.5, help="decision threshold on the probability")
    a("--batch_size", type=int, default=16, help="windows per forward pass (results do not depend on it)")
    a("--num_workers", type=int, default=4, help="> 0: read and transform the next block while the network runs")
    a("--no_cuda", dest="cuda", action="store_false", help="do not use a GPU")
    a("--visualize", action="store_true", help="write a PDF of the network input of each batch's last window")
    a("--jit_load", action="store_true", help="the model file is TorchScript (--jit_save)")
    a("--min_max_norm", action="store_true",
      help="min-max normalisation (models of this fork record it; needed for older model files)")
    a("--latent_extract", action="store_true", help="save pooled encoder features to animal-spot-classifier.p")
    a("--input_file", type=str, default=None, help="a .wav file or a folder of .wav files")
    return p


# --------------------------------------------------------------------------- model
def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm that follows a convolution into it (eval mode only): named
    pairs ``convN``/``bnN`` and consecutive pairs inside a Sequential."""
    for module in list(model.modules()):
        children = dict(module.named_children())
        for name, child in children.items():
            partner = name.replace("conv", "bn", 1)
            if isinstance(child, nn.Conv2d) and partner != name and isinstance(children.get(partner), nn.BatchNorm2d):
                setattr(module, name, fuse_conv_bn_eval(child, children[partner]))
                setattr(module, partner, nn.Identity())
        if isinstance(module, nn.Sequential):
            items = list(module._modules.items())
            for (n1, m1), (n2, m2) in zip(items, items[1:]):
                if isinstance(m1, nn.Conv2d) and isinstance(m2, nn.BatchNorm2d):
                    module._modules[n1] = fuse_conv_bn_eval(m1, m2)
                    module._modules[n2] = nn.Identity()
    return model


def prepare_model(loaded: LoadedModel, device: torch.device) -> Tuple[nn.Module, bool]:
    """The model ready for inference and whether it wants channels-last inputs."""
    model = loaded.model.eval()
    if loaded.jit:
        return model.to(device), False
    channels_last = backbones.get(backbones.backbone_name(loaded.encoder_opts)).channels_last
    model = fuse_batchnorm(model).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, channels_last


def prefetch(iterator: Iterator, enabled: bool) -> Iterator:
    """Compute the next item in a thread while the caller works on the current one."""
    if not enabled:
        yield from iterator
        return
    sentinel = object()
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(next, iterator, sentinel)
        while True:
            item = future.result()
            if item is sentinel:
                return
            future = pool.submit(next, iterator, sentinel)
            yield item


# --------------------------------------------------------------------------- files
def input_files(path: str) -> List[str]:
    if os.path.isdir(path):
        return [os.path.join(path, name) for name in sorted(os.listdir(path)) if name.endswith(".wav")]
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--input_file {path}: no such file or folder")
    return [path]


def file_stem(path: str) -> str:
    """Output name of a recording: its base name without the extension."""
    return os.path.splitext(os.path.basename(path))[0].strip()


def file_logger(path: str, output_dir: Optional[str], debug: bool) -> logging.Logger:
    name = f"{file_stem(path)}_predict_output"
    return setup_logger(name, output_dir, name + ".log", debug)


def fmt_time(samples: int, sr: int) -> float:
    return round(samples / sr, 3)


# ----------------------------------------------------------------------- prediction
class Predictor:
    def __init__(self, args, loaded: LoadedModel, device: torch.device, log: logging.Logger):
        self.args, self.loaded, self.device, self.log = args, loaded, device, log
        self.model, self.channels_last = prepare_model(loaded, device)
        min_max = args.min_max_norm or bool(loaded.train_opts.get("min_max_norm", False))
        if args.min_max_norm and loaded.train_opts and not loaded.train_opts.get("min_max_norm", False):
            log.warning("--min_max_norm is set but the model was trained with 0/1-dB normalisation")
        self.options = FeatureOptions.from_data_opts(loaded.data_opts, min_max)
        self.classes = loaded.classes
        self.names = {index: name for name, index in reversed(list(self.classes.items()))}
        self.num_classes = loaded.num_classes
        if self.num_classes < 2:
            raise ModelFileError(f"{args.model_path}: not a valid number of classes! ({self.num_classes})")
        self.latent = {"filenames": [], "features": [], "spectra_input": []}

    def header(self, flog: logging.Logger, path: str, reader: SignalReader, hop: int) -> None:
        a, o = self.args, self.options
        flog.info(path)
        flog.info(f"Model Path: {a.model_path}")
        flog.info(f"dataOpts: {self.loaded.data_opts}")
        flog.info(f"prediction length: {a.sequence_len}[s], hop length: {a.hop}[s], threshold: {a.threshold}, "
                  f"prediction fmin: {o.fmin}[Hz] prediction fmax: {o.fmax}[Hz]")
        flog.info(f"class distribution: {self.classes}")
        flog.info("Init min-max-normalization activated" if o.min_max_norm else "Init 0/1-dB-normalization activated")
        flog.info(f"size of the file(samples)={reader.n_samples}")
        flog.info(f"size of hop(samples)={hop}")
        flog.info(f"stop time={max(reader.n_samples // hop, 1)}")

    def predict_file(self, path: str) -> logging.Logger:
        a, sr = self.args, self.options.sr
        reader = SignalReader(path, sr)
        flog = file_logger(path, a.output_dir, a.debug)
        window, hop, _ = window_geometry(a.sequence_len, a.hop, sr, reader.n_samples)
        self.header(flog, path, reader, hop)
        batches = iter_window_batches(path, self.options, a.sequence_len, a.hop, a.batch_size, reader)
        with torch.inference_mode():
            for first, inputs in prefetch(batches, a.num_workers > 0):
                x = inputs.to(self.device, non_blocking=True)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                probs = torch.softmax(self.model(x).float(), dim=1).cpu()
                last_label = self.write_records(flog, probs, first, window, hop, reader.n_samples, path)
                if a.latent_extract:
                    self.keep_latent(inputs)
                if a.visualize:
                    self.visualize(inputs[-1], last_label, path, first // a.batch_size)
        return flog

    def write_records(self, flog, probs, first, window, hop, n_samples, path) -> str:
        a, sr = self.args, self.options.sr
        label = ""
        for n in range(probs.shape[0]):
            start = (first + n) * hop
            end = min(start + window - 1, n_samples - 1)
            flog.debug(f"start extract={start}")
            flog.debug(f"end extract={end}")
            times = f"time={fmt_time(start, sr)}-{fmt_time(end, sr)}"
            if a.latent_extract:
                base = path.replace(".wav", "")
                self.latent["filenames"].append(f"{base}_{fmt_time(start, sr)}_{fmt_time(end, sr)}.wav")
            if self.num_classes == 2:
                p = float(probs[n, 1])
                decision = 1 if p >= a.threshold else 0
                label = self.names.get(decision, str(decision))
                flog.info(f"{times}, pred={decision}, prob={p}")
            else:
                p, c = float(probs[n].max()), int(probs[n].argmax())
                decision = 1 if p >= a.threshold else 0
                label = self.names[c]
                rows = "".join(f"{self.names[i]}={float(probs[n, i])};\n" for i in range(self.num_classes))
                flog.info(f"{times}, pred={decision}, pred_class={label}-{c}, prob={p}\noutput_layer:\n{rows}")
        return label

    def keep_latent(self, inputs: torch.Tensor) -> None:
        hidden = getattr(self.model.classifier, "hidden_layer_1", None) if not self.loaded.jit else None
        if hidden is None:
            raise ModelFileError("--latent_extract needs a model file loaded without --jit_load")
        self.latent["features"].append(hidden.detach().float().cpu().squeeze().numpy())
        self.latent["spectra_input"].append(inputs.cpu())

    def visualize(self, item: torch.Tensor, label: str, path: str, batch_index: int) -> None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        o = self.options
        spec = item[0].t().numpy()                                   # (F, T)
        figure, axis = plt.subplots(figsize=(5, 10))
        figure.suptitle("Spectrogram")
        axis.set_title("spectrogram")
        freqs = torch.linspace(o.fmin, o.fmax, spec.shape[0]).numpy()
        times = (torch.arange(spec.shape[1]) * o.hop_length / o.sr).numpy()
        mesh = axis.pcolormesh(times, freqs, spec, cmap="viridis", shading="auto")
        axis.set_xlabel("time [s]")
        axis.set_ylabel("frequency [Hz]")
        figure.colorbar(mesh, ax=axis)
        out = os.path.join(self.args.output_dir, f"net_input_spec_{batch_index}_{label}_{file_stem(path)}.pdf")
        figure.savefig(out)
        plt.close(figure)

    def save_latent(self) -> str:
        os.makedirs(self.args.output_dir, exist_ok=True)
        path = os.path.join(self.args.output_dir, "animal-spot-classifier.p")
        with open(path, "wb") as handle:
            pickle.dump(self.latent, handle)
        return path


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    log = setup_logger("PREDICT", args.log_dir, "PREDICT.log", args.debug)
    try:
        return run(args, log)
    except (ModelFileError, AudioFileError, FileNotFoundError, ValueError) as error:
        log.error(str(error))
        return 1
    finally:
        close_logger(log)


def run(args, log: logging.Logger) -> int:
    if not args.model_path:
        raise ValueError("--model_path is required")
    if args.input_file is None:
        raise ValueError("no audio file or directory of audio files have been specified!")
    if (args.latent_extract or args.visualize) and not args.output_dir:
        raise ValueError("--latent_extract and --visualize need --output_dir")
    if args.checkpoint_path:
        log.warning("--checkpoint_path is not used; the model comes from --model_path")
    if args.batch_size < 1:
        raise ValueError("--batch_size must be at least 1")
    files = input_files(args.input_file)
    if not files:
        raise ValueError(f"--input_file {args.input_file}: no .wav files in this folder")
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    loaded = load_model(args.model_path, jit=args.jit_load, device=device)
    log.debug(f"Model successfully load via torch {'jit' if args.jit_load else 'load'}: {args.model_path}")
    log.info(loaded.model)
    predictor = Predictor(args, loaded, device, log)
    o = predictor.options
    log.debug(f"dataOpts: {loaded.data_opts}")
    log.debug(f"prediction length: {args.sequence_len}[s], hop length: {args.hop}[s], threshold: {args.threshold}, "
              f"prediction fmin: {o.fmin}[Hz], prediction fmax: {o.fmax}[Hz]")
    log.info(f"Class Distribution: {loaded.classes}")
    log.info(f"Predicting files names: {files}")
    log.info(f"Predicting {len(files)} files")
    flog, failed = None, []
    for path in files:
        try:
            file_log = predictor.predict_file(path)
        except AudioFileError as error:   # name it, go on with the other recordings
            log.error(str(error))
            failed.append(path)
            continue
        if flog is not None:
            close_logger(flog)
        flog = file_log
    if flog is not None:
        if args.latent_extract:
            predictor.save_latent()
            flog.debug("Successfully saved latent classification features (final hidden layer)!")
        flog.debug("Finished proccessing")
        close_logger(flog)
    if failed:
        log.error(f"{len(failed)} of {len(files)} file(s) could not be read: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
