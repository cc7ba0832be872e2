"""What the page shows of an item: a spectrogram of the selection with context (PNG) and
its audio (WAV, time-expanded for calls above human hearing), rendered from the
recording on demand, kept in a small cache and prepared in the background for the item
that comes next."""

import threading
from collections import OrderedDict
from typing import Optional

from ..data.features import FeatureOptions
from ..data.snippets import read_snippet, spectrogram_png, wav_bytes

CACHED = 64


class Media:
    def __init__(self, units, options: Optional[FeatureOptions], context: float = 1.0):
        self.units, self.options, self.context = units, options, context
        self.cache: "OrderedDict[tuple, bytes]" = OrderedDict()
        self.lock = threading.Lock()

    def rendered(self, kind: str, item: str, expand: int = 1) -> bytes:
        """``kind`` ``image`` (PNG) or ``audio`` (WAV played ``expand`` times slower) of an item."""
        key = (kind, item, expand)
        with self.lock:
            if key in self.cache:
                self.cache.move_to_end(key)
                return self.cache[key]
        unit = self.units[item]
        samples, rate, offset = read_snippet(unit.path, unit.begin, unit.end, self.context, unit.channel)
        if kind == "image":
            data = spectrogram_png(samples, rate, self.options, (unit.begin - offset, unit.end - offset))
        else:
            data = wav_bytes(samples, rate, expand)
        with self.lock:
            self.cache[key] = data
            while len(self.cache) > CACHED:
                self.cache.popitem(last=False)
        return data

    def prefetch(self, item: str, expand: int) -> None:
        """Render an item's image and audio in the background (its page view is then fast)."""
        def work():
            try:
                self.rendered("image", item)
                self.rendered("audio", item, expand)
            except Exception:           # shown (with its error) when the page asks for it
                pass
        threading.Thread(target=work, daemon=True).start()
