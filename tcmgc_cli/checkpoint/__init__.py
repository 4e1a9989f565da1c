"""Checkpoints and the runs that hold them: the file format (`files.py`), a run folder's layout and payload
(`run_folder.py`), a trained model opened against its cache (`trained.py`), and weights of the reference code
(`reference.py`).

    trained = load_trained(Path("tcmgc-workspace/runs/20260101-120000-tcmgc-tiny"))  # its best checkpoint
    trained, cache, where = open_trained()                                            # the newest run, its cache
"""

from tcmgc_cli.checkpoint.files import FORMAT, load_into, load_verified, read_checkpoint, save_checkpoint
from tcmgc_cli.checkpoint.reference import implied_keep_rate, import_reference, import_reference_run
from tcmgc_cli.checkpoint.run_folder import Provenance, RunFolder, TrainState, find_checkpoint, latest_run
from tcmgc_cli.checkpoint.trained import Trained, check_cache, load_trained, open_trained

__all__ = [
    "FORMAT", "Provenance", "RunFolder", "TrainState", "Trained", "check_cache", "find_checkpoint",
    "implied_keep_rate", "import_reference", "import_reference_run", "latest_run", "load_into", "load_trained",
    "load_verified", "open_trained", "read_checkpoint", "save_checkpoint",
]  # fmt: skip
