"""Prediction logs -> Raven selection tables: ``python EVALUATION/start_evaluation.py EVALUATION/config``.

Config keys: prediction_dir (a folder of *_predict_output.log files, or one log),
output_dir, threshold (a number, as the original; or ``model``: the per-class thresholds
and temperature of the model file named in each log), noise_in_anno (true: also write
the noise segments).
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ANIMAL-SPOT"))

from utils.config import ConfigError, config_path_from_argv, launcher_logger, read_config  # noqa: E402
from evaluation.log_format import LogFormatError  # noqa: E402
from prediction.decisions import evaluate  # noqa: E402
from models.model_file import ModelFileError  # noqa: E402


def main(argv=None) -> int:
    log = launcher_logger()
    try:
        config = read_config(config_path_from_argv(sys.argv[1:] if argv is None else argv))
        log.info(f"Config Data: {dict(config)}")
        missing = [k for k in ("prediction_dir", "output_dir", "threshold") if not config.get(k)]
        if missing:
            raise ConfigError(f"missing config key(s): {', '.join(missing)}")
        threshold = config["threshold"]
        if threshold.strip().lower() == "model":
            threshold = "model"
        else:
            try:
                threshold = float(threshold)
            except ValueError:
                raise ConfigError(f"threshold={threshold!r} is neither a number nor 'model'") from None
        written = evaluate(config["prediction_dir"], config["output_dir"], threshold,
                           "noise_in_anno" in config, echo=log.info)
    except (ConfigError, LogFormatError, ModelFileError, OSError, ValueError) as error:
        log.error(str(error))
        return 1
    log.info(f"{len(written)} annotation file(s) written to {config['output_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
