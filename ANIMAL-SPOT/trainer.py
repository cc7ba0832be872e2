"""The original's module name ``trainer`` (``from trainer import Trainer`` with ANIMAL-SPOT/
on ``sys.path``): the trainer lives in the training room, ``training/trainer.py``."""

if not __package__:                     # imported by its old name: a module of the package all the same
    import as_package
    __package__ = as_package.adopt_script(globals())

from .training.trainer import Trainer, TrainingError, model_prefix  # noqa: E402,F401  (the public names)
