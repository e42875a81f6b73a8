"""Ignite handlers in MONAI's style (``attach(engine)``, per-rank gathering, ``save_rank`` writes): the
DAD tracker, the record's writer, the moving distance and stop rule, the subset export, the score handlers,
resume and experiment tracking."""

from scripts.handlers.dad_tracker import DADTracker
from scripts.handlers.moving_distance import MovingDistanceHandler
from scripts.handlers.record_writer import RecordWriter
from scripts.handlers.resume import ResumeCheckpoint
from scripts.handlers.score_handlers import CheckpointScorer, ScoreTracker, VolumeScorer
from scripts.handlers.subset_export import SubsetExportHandler
from scripts.handlers.tracking import DADTrackingLogger

__all__ = [
    "CheckpointScorer",
    "DADTracker",
    "DADTrackingLogger",
    "MovingDistanceHandler",
    "RecordWriter",
    "ResumeCheckpoint",
    "ScoreTracker",
    "SubsetExportHandler",
    "VolumeScorer",
]
