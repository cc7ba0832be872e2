"""The original's module name ``trainer`` (``from trainer import Trainer`` with ANIMAL-SPOT/
on ``sys.path``): the trainer lives in the training room, ``training/trainer.py``, and this
name is that module itself."""

if "." not in __name__:                 # imported by its old name: the training room's module takes its place
    import as_package
    as_package.adopt(__name__)
else:
    from .training.trainer import Trainer, TrainingError, model_prefix  # noqa: F401  (the public names)
