"""Does a class's recorder show in its spectrograms? A check of the data before training.

Every clip is resampled to ``--sr``, and its spectrogram spans ``fmin`` to ``fmax``. A clip
recorded at a native rate ``r`` holds nothing above ``r / 2``: where one class was recorded
at 10 kHz and the others at 48 kHz, that class's spectrograms are empty above 5 kHz and
theirs are not, so a network can tell the classes apart by the recorder alone (and
reaches a test score that says nothing about the calls). The check reads the file headers
only: per class the native sample rates and the share of clips whose band ends below
``fmax``; where the classes' bands differ it says so in one warning, with a way out
(a common ``--fmax`` below every class's band), and the model card keeps the table.
"""

import os
from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import soundfile as sf

from .filenames import class_name

DIFFERENT = 0.1          # band ends (medians per class) further apart than this share of fmax differ


@dataclass(frozen=True)
class ClassBand:
    """One class's clips: their native sample rates, and how many end below ``fmax``."""

    name: str
    rates: Dict[int, int]               # native rate (Hz) -> clips
    below: int                          # clips whose band (rate / 2) ends below fmax

    @property
    def clips(self) -> int:
        return sum(self.rates.values())

    @property
    def share_below(self) -> float:
        return self.below / self.clips if self.clips else 0.0

    def band_end(self, fmax: float) -> float:
        """The median clip's upper band edge in the spectrogram (Hz)."""
        ends = [min(rate / 2, fmax) for rate, count in self.rates.items() for _ in range(count)]
        return float(np.median(ends)) if ends else fmax

    def to_dict(self) -> Dict:
        return {"sample_rates": {str(k): v for k, v in sorted(self.rates.items())}, "clips": self.clips,
                "below_fmax": self.below}


def class_bands(files: Sequence[str], data_dir: str, fmax: float) -> Dict[str, ClassBand]:
    """Per class (from the file names) the native rates of ``files`` (below ``data_dir``)."""
    rates: Dict[str, Counter] = {}
    for relative in files:
        try:
            rate = int(sf.info(os.path.join(data_dir, relative)).samplerate)
        except Exception:                 # unreadable files are named and set aside elsewhere
            continue
        rates.setdefault(class_name(relative), Counter())[rate] += 1
    return bands_of(rates, fmax)


def bands_of(rates: Dict[str, Counter], fmax: float) -> Dict[str, ClassBand]:
    """Per class its ``ClassBand`` from its clips' native rates (rate -> clips)."""
    return {name: ClassBand(name, dict(counts), sum(c for r, c in counts.items() if r / 2 < fmax))
            for name, counts in sorted(rates.items()) if counts}


def band_warning(bands: Dict[str, ClassBand], fmin: float, fmax: float, sr: int) -> Optional[str]:
    """One warning where the spectrogram's band is not the same for every class (None where it is)."""
    notes: List[str] = []
    if fmax > sr / 2:
        notes.append(f"--fmax {fmax:g} Hz lies above the model's Nyquist frequency ({sr / 2:g} Hz at --sr {sr}): the "
                     f"spectrogram is empty above {sr / 2:g} Hz for every clip; use --fmax {sr / 2:g} or a higher --sr")
    top = min(fmax, sr / 2)
    ends = {name: band.band_end(top) for name, band in bands.items()}
    if len(ends) > 1 and max(ends.values()) - min(ends.values()) > DIFFERENT * top:
        widest = max(ends.values())
        narrow = [name for name, end in ends.items() if widest - end > DIFFERENT * top]
        details = "; ".join(f"{name}: {100 * bands[name].share_below:.0f} % of its {bands[name].clips} clips end "
                            f"below {fmax:g} Hz (native rates {rates_text(bands[name].rates)})" for name in narrow)
        common = int(min(ends.values()) // 100 * 100)
        notes.append(f"the classes were recorded with different bandwidths, so a model can learn the recorder, not "
                     f"the call: {details}; the other classes reach {widest:g} Hz. A way out: --fmax {common} "
                     f"(below every class's band; now {fmax:g}) so that every class's spectrograms hold the same band"
                     + (f" (above --fmin {fmin:g})" if common <= fmin else ""))
    return " ".join(notes) if notes else None


def rates_text(rates: Dict[int, int]) -> str:
    return ", ".join(f"{rate} Hz x{count}" for rate, count in sorted(rates.items()))
