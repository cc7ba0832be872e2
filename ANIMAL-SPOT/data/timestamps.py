"""A recording's start time from its file name, for Raven's ``Begin Date Time``.

``--timestamp_format`` gives the pattern (a strftime pattern, e.g. ``%Y%m%d_%H%M%S``);
without it the common recorder styles are recognised: AudioMoth ``SITE_20240612_031500``,
``2024-06-12_03-15-00``, SoundTrap ``5216.240612031500``, and ``240612_031500``.
"""

import os
import re
from datetime import datetime
from typing import Optional

STYLES = [  # (pattern, strptime format of the groups joined)
    (r"(?<!\d)(\d{8})[_T-](\d{6})(?!\d)", "%Y%m%d%H%M%S"),                                  # AudioMoth, SITE_...
    (r"(?<!\d)(\d{4})-(\d{2})-(\d{2})[_ T](\d{2})[-:_](\d{2})[-:_](\d{2})(?!\d)", "%Y%m%d%H%M%S"),
    (r"\.(\d{12})(?=\.|$)", "%y%m%d%H%M%S"),                                                 # SoundTrap
    (r"(?<!\d)(\d{6})[_-](\d{6})(?!\d)", "%y%m%d%H%M%S"),
]
TOKENS = {"%Y": r"\d{4}", "%y": r"\d{2}", "%m": r"\d{2}", "%d": r"\d{2}", "%H": r"\d{2}", "%M": r"\d{2}",
          "%S": r"\d{2}", "%j": r"\d{3}", "%f": r"\d{1,6}", "%%": "%"}


def format_pattern(fmt: str) -> str:
    """A strftime pattern as a regular expression that finds it in a file name."""
    out, i = "", 0
    while i < len(fmt):
        token = fmt[i:i + 2]
        if token in TOKENS:
            out += TOKENS[token]
            i += 2
        elif token.startswith("%"):
            raise ValueError(f"--timestamp_format {fmt}: {token} is not supported (use %Y %y %m %d %H %M %S %j %f)")
        else:
            out += re.escape(fmt[i])
            i += 1
    return out


def start_time(path: str, fmt: Optional[str] = None) -> Optional[datetime]:
    """The recording's start time from its file name, or None."""
    stem = os.path.splitext(os.path.basename(path.rstrip("/")))[0]
    if fmt:
        match = re.search(format_pattern(fmt), stem)
        if not match:
            return None
        try:
            return datetime.strptime(match.group(0), fmt)
        except ValueError:
            return None
    for pattern, layout in STYLES:
        match = re.search(pattern, stem)
        if match:
            try:
                value = datetime.strptime("".join(match.groups()), layout)
            except ValueError:
                continue
            if 1980 <= value.year <= 2100:
                return value
    return None
