"""Find more calls like this one: season embeddings, search by example, few-shot heads.

    python ANIMAL-SPOT/embed.py --model_path M.pk --input_file DIR --store STORE [--hop 0.5]
    python ANIMAL-SPOT/embed.py --backbone NAME [--pretrained_weights PATH] --input_file DIR --store STORE
    python ANIMAL-SPOT/embed.py search --store STORE --query QUERY [--top N] --output TABLE.txt
    python ANIMAL-SPOT/embed.py fit --store STORE --labels TABLES_OR_CLIPS --out HEAD.pk [--mlp H]
    python ANIMAL-SPOT/embed.py classify --store STORE --model_path HEAD.pk --output_dir DIR
    python ANIMAL-SPOT/embed.py report --store STORE

Embedding is one more output of the prediction run (``prediction.run``): the same
windows, spectrograms and batches as ``predict.py`` (``--amp``, ``--batch_size``,
``--shard``, ``torchrun``), and the pooled encoder features of each window go to the store
(``embedding.store.StoreSink``) as float16. Processes and shards fill one store at once,
each with its journal in the store (``embed.py report --store STORE``). A rerun embeds
only the recordings the store lacks (also after ``kill -9``); a store made with another
model or settings is refused. ``search`` writes the windows most
similar to a query (a clip file, ``RECORDING:START-END``, or ``TABLE.txt#SELECTION``) as a
Raven table; ``fit`` fits a small head on stored windows labelled by review journals,
Raven tables or clips and saves it as a normal model file (the embedding model's encoder
plus the head); ``classify`` applies such a head to the whole store without computing a
spectrogram and writes the logs and Raven tables ``predict.py`` would write.
"""

import argparse
import dataclasses
import logging
import os
import sys
import time
from typing import List, Optional

if not __package__:                     # python ANIMAL-SPOT/<command>.py: a module of the package all the same
    import as_package
    __package__ = as_package.adopt_script(globals())

from .data.audio_io import AudioFileError
from .data.recording import AudioOptions, last_window
from .data.sources import recording_list
from .embedding import classify, encoders, heads, search
from .embedding.encoders import TEMPLATE, Choice
from .embedding.store import Store, StoreError, StoreSink
from .models import foundation
from .models.foundation import EncoderError
from .models.model_file import ModelFileError
from .models.tv_encoder import PretrainedWeightsError
from .prediction.core import Predictor
from .prediction.decisions import DecisionRule
from .prediction.records import check_names
from .prediction.run import AudioSource, Decisions, Layout, check_owners, journal_owners, run_recordings
from .prediction.season import SeasonJournal, report_lines, share
from .reviews.journal import journal_selections
from .utils import cli, runtime
from .utils.atomic import OutputError

log = logging.getLogger("EMBED")
JOURNAL = "embed_journal."
STORE_ADVICE = ("Embed them into another --store, or remove the parts named to embed them again")
COMMANDS = ("search", "fit", "classify", "report", "encoders")
ERRORS = (StoreError, ModelFileError, AudioFileError, PretrainedWeightsError, EncoderError, OutputError, ValueError,
          FileNotFoundError)


def embed_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Embed every window of a season into an embedding store.",
                                epilog="Sub-commands: search, fit, classify, report (embed.py <command> --help).")
    p.add_argument("--model_path", default=None,
                   help="an ANIMAL-SPOT.pk whose pooled encoder features are the embedding")
    p.add_argument("--backbone", default=None,
                   help="or an untrained backbone by name (with ImageNet weights), or a foundation encoder: birdnet, "
                        "batdetect2, onnx:PATH, torchscript:PATH (embed.py encoders lists them)")
    p.add_argument("--pretrained_weights", default=None, help="--backbone: local weights file (else the cache)")
    p.add_argument("--input_file", required=True, help="a recording, or a folder searched recursively")
    p.add_argument("--store", required=True, help="the store folder (made, or appended to)")
    p.add_argument("--hop", type=float, default=0.5, help="window step in seconds (default 0.5)")
    p.add_argument("--sequence_len", type=float, default=None,
                   help="window length in seconds (default: the model's training segment)")
    p.add_argument("--batch_size", type=int, default=16, help="windows per forward pass (default 16)")
    p.add_argument("--amp", action="store_true",
                   help="reduced precision where the device has it: the features then carry its rounding (bfloat16: "
                        "about 3 significant digits; no decision is taken here, and a head sees them through its "
                        "own float16 rounding)")
    p.add_argument("--memory_format", default="auto", choices=("auto", "contiguous", "channels_last"))
    p.add_argument("--no_cuda", action="store_true", help="do not use a GPU")
    p.add_argument("--shard", default=None, metavar="I/N", help="embed the I-th of N shares of the recordings")
    p.add_argument("--encoder_sr", type=int, default=None, help="onnx:/torchscript: encoders: their sample rate "
                                                                  "(default: the file's metadata)")
    p.add_argument("--encoder_window", type=float, default=None, help="onnx:/torchscript: encoders: their window in "
                                                                        "seconds (default: the file's metadata)")
    p.add_argument("--engine", default="auto", choices=("auto", "litert", "torch"),
                   help="--backbone birdnet: LiteRT (the published model file, fastest on a CPU) or the PyTorch "
                        "network converted from it (any device, --amp); auto: torch on a GPU, else litert")
    for key, value in TEMPLATE.items():
        p.add_argument(f"--{key}", type=type(value), default=None,
                       help=f"--backbone: {key} (default {value}, the training scripts' setting)")
    return p


def search_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="embed.py search", description="The windows most like a query, as a Raven table.")
    p.add_argument("--store", required=True)
    p.add_argument("--query", required=True, help="a clip file, RECORDING:START-END (seconds), or TABLE.txt#SELECTION")
    p.add_argument("--top", type=int, default=20, help="selections to write (default 20)")
    p.add_argument("--output", required=True, help="the Raven table to write")
    p.add_argument("--model_path", default=None, help="the store's model, where it moved (clip queries)")
    return p


def fit_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="embed.py fit", description="Fit a small head on stored embeddings.")
    p.add_argument("--store", required=True)
    p.add_argument("--labels", required=True, nargs="+",
                   help="review journals (review_journal.jsonl), Raven tables or folders of them, or folders of "
                        "labelled clips (ANIMAL-SPOT names)")
    p.add_argument("--out", required=True, help="the model file to write (HEAD.pk)")
    p.add_argument("--mlp", type=int, default=None, metavar="H", help="a hidden layer of H units (default: linear)")
    p.add_argument("--epochs", type=int, default=300, help="full-batch optimisation steps (default 300)")
    p.add_argument("--weight_decay", type=float, default=None,
                   help="L2 penalty on the standardised features (default: the best of 0.001, 0.01, 0.1 and 1 on the "
                        "held-out recordings)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model_path", default=None, help="the store's model, where it moved")
    return p


def classify_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="embed.py classify", description="Apply a head to the whole store.")
    p.add_argument("--store", required=True)
    p.add_argument("--model_path", required=True, help="a head written by embed.py fit")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--threshold", type=float, default=None, help="as predict.py --threshold")
    p.add_argument("--raven", action="store_true", help="also write Raven tables (per recording and combined)")
    p.add_argument("--overwrite", action="store_true",
                   help="a folder holding another run (other settings, other recordings): replace it; without it such "
                        "a folder is refused and the outputs of recordings not in this store are kept")
    p.add_argument("--no_progress", action="store_true")
    return p


def encoders_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog="embed.py encoders", description="The foundation encoders and whether they "
                                                                          "are installed.")


def run_encoders(args, log: logging.Logger) -> int:
    for name, encoder in foundation.ENCODERS.items():
        info = encoder.info
        try:
            foundation.encoder_options(name)
            state = "installed"
        except EncoderError as error:
            state = f"not installed ({error})"
        print(f"{name}: {info.version}; {info.window:g} s at {info.sample_rate} Hz -> {info.dim} values; licence "
              f"{info.licence}; {state}")
    print("onnx:PATH, torchscript:PATH: an exported embedding model of your own ((B, samples) -> (B, dim)); its "
          "sample rate and window from its metadata or --encoder_sr, --encoder_window")
    return 0


def report_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="embed.py report", description="The store's account from its journals.")
    p.add_argument("--store", required=True)
    return p


# --------------------------------------------------------------------------- embed
def run_embed(args, log: logging.Logger) -> int:
    device = runtime.choose_device(not args.no_cuda, int(os.environ.get("LOCAL_RANK", "0")))
    precision = runtime.choose_precision(device, args.amp)
    spectrogram = {k: getattr(args, k) for k in TEMPLATE}
    engine = args.engine if args.engine != "auto" else ("torch" if device.type == "cuda" else "litert")
    choice = Choice(args.model_path, args.backbone, args.pretrained_weights, args.sequence_len, spectrogram,
                    {"sample_rate": args.encoder_sr, "window": args.encoder_window,
                     "engine": engine if args.backbone == "birdnet" else None})
    model, description = encoders.choose(choice, device, precision, args.memory_format)
    predictor = Predictor([model], args.sequence_len, args.hop, args.batch_size, device=device,
                          prefetch=device.type != "cpu")
    options = model.options
    description = dataclasses.replace(description, window=float(predictor.sequence_len), hop=float(args.hop),
                                      last_window=last_window(options) if isinstance(options, AudioOptions) else None)
    files = recording_list(args.input_file)
    check_names(files)
    processes = runtime.start_processes(not args.no_cuda)
    try:
        if processes.main:
            Store(args.store).create(description)      # also each shard of a job array: safe on one store
        processes.barrier()
        store = Store(args.store)
        store.check(description)
        layout = Layout(args.input_file)
        layout.check_unique(files, stores=True)
        mine, tag, _ = share(files, args.shard, processes)
        sinks = [StoreSink(store)]
        check_owners(files, layout, sinks, journal_owners(args.store, JOURNAL), STORE_ADVICE)
        journal = SeasonJournal(args.store, tag, JOURNAL)
        journal.write("planned", recordings=mine)
        started = time.time()
        failed = run_recordings(mine, AudioSource(predictor, "mean", pooled=True), layout, sinks,
                                Decisions(DecisionRule(), predictor.class_map), journal)
        failed_anywhere = sum(processes.gather(len(failed)))
    finally:
        runtime.stop_processes(processes)
    recordings, windows = store.size()
    log.info(f"{len(mine) - len(failed)} recording(s) embedded or found in {time.time() - started:.1f} s; the store "
             f"holds {recordings} recording(s), {windows} windows of {description.dim} dimensions")
    if failed:
        log.error(f"{len(failed)} recording(s) could not be read: {', '.join(failed)}")
    return 1 if failed or failed_anywhere else 0


def run_report(args, log: logging.Logger) -> int:
    lines, complete = report_lines(args.store, JOURNAL)
    cli.print_text("\n".join(lines))
    return 0 if complete else 1


def run_fit(args, log: logging.Logger) -> int:
    """Examples from review journals (``reviews.journal``), tables and clip folders; the head."""
    journals = [source for source in args.labels if source.endswith(".jsonl")]
    reviewed = {}
    for path in journals:
        for key, rows in journal_selections(path).items():
            reviewed.setdefault(key, []).extend(rows)
    store = Store.existing(args.store)
    examples = heads.gather(store, [s for s in args.labels if s not in journals], args.model_path, reviewed)
    heads.fit_model_file(store, examples, args.out, heads.HeadSettings(args.mlp, args.epochs, args.weight_decay,
                                                                       args.seed), args.labels, args.model_path)
    return 0


def run_classify(args, log: logging.Logger) -> int:
    failed = classify.classify_store(Store.existing(args.store), args.model_path, args.output_dir, args.threshold,
                                     args.raven, args.overwrite)
    return 1 if failed else 0


def run_search(args, log: logging.Logger) -> int:
    search.search_to_table(Store.existing(args.store), args.query, args.top, args.output, args.model_path)
    return 0


# --------------------------------------------------------------------------- main
def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else "embed"
    parser = {"embed": embed_parser, "search": search_parser, "fit": fit_parser, "classify": classify_parser,
              "report": report_parser, "encoders": encoders_parser}[command]()
    args = parser.parse_args(argv[1:] if command != "embed" else argv)
    body = {"embed": run_embed, "search": run_search, "fit": run_fit, "classify": run_classify, "report": run_report,
            "encoders": run_encoders}[command]
    return cli.run(lambda log: body(args, log), "EMBED", errors=ERRORS, library=True)


if __name__ == "__main__":
    sys.exit(main())
