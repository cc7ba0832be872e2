"""The training listeners on constructed passes: the epoch line, best weights by the
monitored figure, the schedulers, early stopping, checkpoints and their state."""

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import listeners as L
from evaluation.metrics import PassMetrics
from trainer import Batch, PassResult
from utils.classmap import ClassMap
from utils.runtime import Processes


def pass_result(phase, epoch, pairs, loss=1.0, classes=3, logits=None):
    """A pass whose (label, prediction) pairs are given."""
    metrics = PassMetrics(classes)
    labels, preds = zip(*pairs)
    metrics.update(torch.tensor(labels), torch.tensor(preds))
    return PassResult(phase, epoch, loss, metrics, 1.0, 0.1, lr=1e-3 if phase == "train" else None,
                      logits=logits, labels=np.asarray(labels) if logits is not None else None)


def fake_trainer(classes=("K1", "K2", "noise")):
    model = torch.nn.Linear(2, len(classes))
    return SimpleNamespace(processes=Processes(), class_map=ClassMap.from_names(classes), num_classes=len(classes),
                           model=model, requests=[], request_stop=lambda reason: None)


# (label, prediction) pairs of 9 samples: class 0 has 6, class 1 one, class 2 two
MAJORITY = [(0, 0)] * 6 + [(1, 0), (2, 0), (2, 0)]                   # accuracy 6/9, balanced (1 + 0 + 0) / 3
BALANCED = [(0, 0)] * 4 + [(0, 1), (0, 2), (1, 1), (2, 2), (2, 2)]    # accuracy 7/9, balanced (4/6 + 1 + 1) / 3


def test_epoch_line_and_table(caplog):
    trainer = fake_trainer()
    with caplog.at_level(logging.INFO, logger="ANIMAL-SPOT"):
        L.EpochLog().on_pass_end(trainer, pass_result("train", 4, MAJORITY, loss=0.4123))
        L.EpochLog().on_pass_end(trainer, pass_result("val", 4, BALANCED))
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "train|4|loss:0.412|accuracy:0.667|mean_per_class_acc:0.333|lr:1.00e-03|t:1.0"
    assert lines[1] == "val|4|loss:1.000|accuracy:0.778|mean_per_class_acc:0.889|t:1.0"
    assert lines[2] == "val|4|K1: 66.7% (n=6) P 100.0% F1 80.0%"
    assert lines[-1] == "val|4|macro F1: 75.6%"                   # (4/5 + 2/3 + 4/5) / 3


@pytest.mark.parametrize("monitor,expected", [("accuracy", 0), ("balanced_accuracy", 1), ("loss", 2)])
def test_best_weights_follow_the_monitored_figure(monitor, expected):
    trainer = fake_trainer()
    best = L.BestWeights(trainer.model.state_dict(), L.Monitor(monitor))
    passes = [pass_result("val", 0, [(0, 0)] * 6 + [(1, 1), (2, 0), (2, 0)], loss=0.9),   # acc 7/9, balanced 2/3
              pass_result("val", 1, [(0, 0)] * 5 + [(0, 1), (1, 1), (2, 2), (2, 0)], loss=0.8),  # acc 7/9, bal. 7/9
              pass_result("val", 2, MAJORITY, loss=0.3)]                                     # acc 6/9, bal. 1/3
    for epoch, r in enumerate(passes):
        with torch.no_grad():
            trainer.model.weight.fill_(float(epoch))
        best.on_pass_end(trainer, r)
    assert best.epoch == expected and best.monitor.name == monitor
    assert float(best.state["weight"][0, 0]) == float(expected)     # the weights of that epoch


def test_best_weights_keep_their_logits_through_a_checkpoint():
    trainer = fake_trainer()
    best = L.BestWeights(trainer.model.state_dict(), L.Monitor("macro_f1"))
    logits = np.arange(12, dtype=np.float64).reshape(4, 3)
    best.on_pass_end(trainer, pass_result("val", 3, [(0, 0), (1, 1), (2, 2), (0, 1)], logits=logits))
    train_state, extra = {}, {}
    best.save(train_state, extra)
    again = L.BestWeights(trainer.model.state_dict(), L.Monitor("macro_f1"))
    again.restore(train_state, extra)
    assert again.epoch == 3 and again.metric == best.metric and np.array_equal(again.logits, logits)
    other = L.BestWeights(trainer.model.state_dict(), L.Monitor("accuracy"))
    with pytest.raises(Exception, match="--monitor macro_f1"):
        other.restore(train_state, extra)


def test_plateau_scheduler_and_early_stopping_follow_the_mode():
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0)
    trainer = fake_trainer()
    stops = []
    trainer.request_stop = stops.append
    scheduler = L.PlateauScheduler(optimizer, patience=1, factor=0.5, monitor=L.Monitor("loss"))
    stopping = L.EarlyStopping(patience_epochs=2, epochs_per_eval=1, monitor=L.Monitor("loss"))
    for epoch, loss in enumerate([1.0, 0.5, 0.6, 0.7, 0.8]):
        r = pass_result("val", epoch, BALANCED, loss=loss)
        scheduler.on_pass_end(trainer, r)
        stopping.on_pass_end(trainer, r)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)        # two worse losses after the best: one decay
    assert len(stops) == 1                                                  # the third worse validation stops


def test_one_cycle_steps_per_training_batch_and_checkpoints_after_validation():
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    one_cycle = L.OneCycleScheduler(optimizer, 1e-3, total_steps=10)
    trainer = fake_trainer()
    batch = Batch("train", 0, 0, torch.zeros(1), torch.zeros(1), torch.zeros(1), 0.0)
    for _ in range(4):
        optimizer.step()                         # as the trainer does, before the scheduler
        one_cycle.on_batch_end(trainer, batch)
    one_cycle.on_batch_end(trainer, Batch("val", 0, 0, torch.zeros(1), torch.zeros(1), torch.zeros(1), 0.0))
    assert one_cycle.scheduler.last_epoch == 4
    written = []
    handler = SimpleNamespace(write=lambda state, epoch: written.append(epoch))
    trainer.checkpoint = lambda epoch: {"epoch": epoch}
    writer = L.CheckpointWriter(handler)
    writer.on_pass_end(trainer, pass_result("train", 5, BALANCED))
    writer.on_pass_end(trainer, pass_result("val", 5, BALANCED))
    assert written == [5]
