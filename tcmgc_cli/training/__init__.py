"""Training: the reference recipe over cached features (`trainer.py`), and runs as library calls (`runs.py`).

from tcmgc_cli import DataSource, train
result = train(DataSource("msrvtt", Path("MSRVTT")), "tcmgc-tiny", epochs=5)
"""

from tcmgc_cli.training.runs import TrainResult, TrainSetup, prepare, train, train_run
from tcmgc_cli.training.trainer import TrainData, Trainer, TrainStep, epoch_order, seed_everything

__all__ = [
    "TrainData", "TrainResult", "TrainSetup", "TrainStep", "Trainer", "epoch_order", "prepare", "seed_everything",
    "train", "train_run",
]  # fmt: skip
