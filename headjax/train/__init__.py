"""SFT training: optimizer, train state, jitted step, checkpoints and the loop."""

from headjax.train.checkpoint import Checkpointer, abstract_tree
from headjax.train.config import default_config, validate
from headjax.train.loop import Hooks, TrainingDivergedError, run_loop
from headjax.train.optimizer import make_optimizer, make_schedule, masked
from headjax.train.state import TrainState, create_state
from headjax.train.step import jit_train_step, make_train_step
from headjax.train.trainer import sharded_state, train

__all__ = [
    "Checkpointer", "Hooks", "TrainState", "TrainingDivergedError", "abstract_tree",
    "create_state", "default_config", "jit_train_step", "make_optimizer",
    "make_schedule", "make_train_step", "masked", "run_loop", "sharded_state", "train",
    "validate",
]
