"""MONAI's ``ValidationHandler``, plus a validation at the end of the run when its last epoch was not one
of the ``interval``: a run the stop rule ends early, or one whose ``epochs`` is no multiple of
``val_interval``, still leaves a validated ``model.pt``."""

from __future__ import annotations

from ignite.engine import Engine, Events
from monai.handlers import ValidationHandler

__all__ = ["ValidateAtEnd"]


class ValidateAtEnd(ValidationHandler):
    """``ValidationHandler`` (epoch level) that also validates on ``Events.COMPLETED`` (which Ignite fires
    after ``terminate()`` too) unless the last epoch was validated already."""

    def attach(self, engine: Engine) -> None:
        super().attach(engine)
        if not engine.has_event_handler(self._at_end, Events.COMPLETED):
            engine.add_event_handler(Events.COMPLETED, self._at_end)

    def _at_end(self, engine: Engine) -> None:
        if self.epoch_level and engine.state.epoch % self.interval != 0:
            self(engine)
