"""The review's Raven tables (``<out>/tables/<recording>.Table.1.selections.txt``): per
recording, its detections and the reviewed units below the threshold, with the model's
label and score, ``Verified`` (yes / no / unsure) and ``Reviewed label`` (the class the
reviewer says the selection holds). ``TRAINING/clips_from_raven.py`` turns them into
training clips."""

from typing import Dict, Sequence, Tuple

from ..evaluation.raven import HEADER_COLUMNS, format_score, tsv
from .journal import VERIFIED, called
from .units import Unit

COLUMNS = HEADER_COLUMNS + ["Score", "Verified", "Reviewed label"]


def table_text(units: Sequence[Unit], answers: Dict[str, dict], freq_range: Tuple = ("", "")) -> str:
    """One recording's table (``units``: its units)."""
    shown = sorted((u for u in units if u.above or u.id in answers), key=lambda u: (u.begin, u.channel, u.end))
    rows = []
    for number, u in enumerate(shown, start=1):
        answer = answers.get(u.id)
        verified = VERIFIED.get(answer["decision"], "") if answer else ""
        reviewed = (called(answer) if verified == "yes" else "") if answer else ""
        comment = " ".join((answer.get("comment") or "").split()) if answer else ""     # one line, whatever the journal
        if not comment:
            comment = " " if u.above else "below threshold"
        rows.append([str(number), "Spectrogram_1", str(u.channel), str(u.begin), str(u.end), str(freq_range[0]),
                     str(freq_range[1]), u.label, comment, format_score(u.score), verified, reviewed])
    return tsv(COLUMNS, rows)
