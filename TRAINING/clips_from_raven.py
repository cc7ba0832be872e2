"""Cut annotated selections of long recordings into training clips named as ANIMAL-SPOT
expects: ``python TRAINING/clips_from_raven.py --recordings DIR --annotations DIR --out DIR``.

The same command as ``animal-spot clips --annotations DIR --recordings DIR --out DIR`` (every
flag of ``ANIMAL-SPOT/clips.py``: ``--label_column``, ``--year``, ``--tape``,
``--noise_clips``, ``--seed``, ``--rejected_as_noise``, ``--into_partition``)."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ANIMAL-SPOT"))

import clips  # noqa: E402


def main(argv=None) -> int:
    return clips.main(argv)


if __name__ == "__main__":
    sys.exit(main())
