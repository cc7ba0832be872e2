"""Training clips named as ANIMAL-SPOT expects, from data as you keep it:
``animal-spot clips ...`` or ``python ANIMAL-SPOT/clips.py ...``.

    animal-spot clips --folders DIR --out data                  # one folder per class (BirdNET-Analyzer)
    animal-spot clips --table labels.csv [--audio DIR] --out data   # file,start,end,label (OpenSoundscape)
    animal-spot clips --annotations TABLES --recordings DIR --out data [--noise_clips N]   # Raven tables

Clips are written to ``--out/<CLASS>/<CLASS>-<SOURCE>_<ID>_<YEAR>_<TAPE>_<STARTMS>_<ENDMS>.wav``
(nothing is renamed or changed in place); train with ``--data_dir`` set to ``--out``. TAPE
is the clip's recording (class folders: its sub-folder, else its file), so the tape split
keeps a recording's clips in one partition; YEAR comes from the name (a ``_YEAR_TAPE``
pair, or a date such as ``20240612``), else ``--year``, else the file's modification year.
Raven tables may be reviewed tables (``review.py``'s ``tables/``): rows verified ``yes``
become clips of their ``Reviewed label``; ``--rejected_as_noise`` makes ``no`` rows noise;
``--into_partition train`` adds the clips to the split already in ``--out``.
"""

import argparse
import logging
import os
import sys
from typing import List, Optional

if not __package__:                     # python ANIMAL-SPOT/<command>.py: a module of the package all the same
    import as_package
    __package__ = as_package.adopt_script(globals())

from .data import clips
from .data.audio_io import AudioFileError
from .data.split import add_to_partition
from .evaluation.raven import TableError
from .utils import cli
from .utils.atomic import OutputError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="animal-spot clips", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--folders", default=None, help="a folder with one sub-folder of audio files per class")
    source.add_argument("--table", default=None, help="a CSV label table: file, start, end (seconds) and label, or "
                                                      "one 0/1 column per class")
    source.add_argument("--annotations", default=None, help="a folder of Raven selection tables (with --recordings)")
    p.add_argument("--out", required=True, help="where the clips go (one sub-folder per class)")
    p.add_argument("--audio", default=None, help="--table: the folder its file names are relative to (default: the "
                                                 "table's folder)")
    p.add_argument("--recordings", default=None, help="--annotations: the folder of the annotated recordings")
    p.add_argument("--label_column", default="Sound type", help="--annotations: the label column (default 'Sound "
                                                                 "type')")
    p.add_argument("--year", default=None, help="YEAR for recordings whose names carry none")
    p.add_argument("--tape", default=None, help="--annotations: TAPE for recordings whose names carry none")
    p.add_argument("--noise_clips", type=int, default=0, help="--annotations: noise clips per recording from "
                                                              "unannotated stretches")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise clip positions")
    p.add_argument("--rejected_as_noise", action="store_true", help="reviewed tables: rows verified 'no' become "
                                                                    "noise clips")
    p.add_argument("--into_partition", choices=("train", "val", "test"), default=None,
                   help="add the clips to this partition of the split already in --out")
    return p


def check_out(out: str, source: str) -> None:
    """``--out`` is a folder of its own: not the source, nor inside it (the clips would be read again)."""
    out_real, source_real = os.path.realpath(out), os.path.realpath(source)
    if os.path.commonpath([out_real, source_real]) == source_real:
        raise OutputError(f"--out {out} lies in {source}: choose a folder outside it (nothing is changed in place)")


def run(args, log: logging.Logger) -> int:
    if args.folders:
        check_out(args.out, args.folders)
        written = clips.from_folders(args.folders, args.out, args.year)
    elif args.table:
        written = clips.from_table(args.table, args.audio, args.out, args.year)
    else:
        if not args.recordings:
            raise ValueError("--annotations needs --recordings (the folder of the annotated recordings)")
        written = clips.from_raven(args.recordings, args.annotations, args.out, args.label_column,
                                   args.rejected_as_noise, args.noise_clips, args.seed, args.year, args.tape)
    classes = sorted({os.path.dirname(w) for w in written})
    log.info(f"{len(written)} clip(s) of {len(classes)} class(es) written to {args.out}: {', '.join(classes)}")
    if args.into_partition:
        added = add_to_partition(args.out, written, args.into_partition)
        listed = len(written) - len(added)
        log.info(f"{len(added)} clip(s) added to the {args.into_partition} partition of the split in {args.out}"
                 + (f" ({listed} listed there already)" if listed else ""))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.run(lambda log: run(args, log), "ANIMAL-SPOT",
                   errors=(TableError, AudioFileError, FileNotFoundError, OutputError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
