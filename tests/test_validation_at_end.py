"""The last epoch is always validated (so model.pt exists), also when the stop rule ends the run early."""

from ignite.engine import Engine, Events
from scripts.handlers.validation import ValidateAtEnd


class CountingValidator:
    def __init__(self):
        self.epochs = []

    def run(self, global_epoch=1):
        self.epochs.append(global_epoch)


def _trainer():
    return Engine(lambda engine, batch: None)


def _handler(validator, interval):
    handler = ValidateAtEnd(validator=None, interval=interval, epoch_level=True)
    handler.validator = validator  # a stand-in that counts (MONAI's setter wants a real Evaluator)
    return handler


def test_validates_every_interval_and_at_the_last_epoch():
    validator = CountingValidator()
    trainer = _trainer()
    _handler(validator, 2).attach(trainer)
    trainer.run([0], max_epochs=5)
    assert validator.epochs == [2, 4, 5]  # 5 is no multiple of 2: validated at the end


def test_last_epoch_on_the_interval_is_validated_once():
    validator = CountingValidator()
    trainer = _trainer()
    _handler(validator, 2).attach(trainer)
    trainer.run([0], max_epochs=4)
    assert validator.epochs == [2, 4]


def test_a_run_terminated_early_is_validated_where_it_stopped():
    validator = CountingValidator()
    trainer = _trainer()
    _handler(validator, 5).attach(trainer)
    trainer.add_event_handler(Events.EPOCH_COMPLETED(once=3), lambda engine: engine.terminate())
    trainer.run([0], max_epochs=10)
    assert validator.epochs == [3]  # shorter than val_interval, yet validated
