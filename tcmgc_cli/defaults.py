"""The library's defaults, defined once: the Typer options, the config dataclasses and the library calls read them.

Torch-free and import-free, so that `tcmgc --help` shows them without loading anything.
"""

MODEL = "tcmgc-b32"  # the model config `--model` names by default (CLIP ViT-B/32, the paper's main setting)
FPS = 1.0  # track rate: frames decoded and encoded per second of video (the reference's 1 fps)
NUM_FRAMES = 12  # T (Nf): frames per scored entry, MSR-VTT's and VATEX's (method doc, section 1)
MAX_WORDS = 32  # L (Nw): text tokens per caption, MSR-VTT's and VATEX's
TEMPORAL_POSITIONS = 77  # rows of the temporal encoder's frame position table (CLIP's text context)
DATASET_SIZES = {"msrvtt": (MAX_WORDS, NUM_FRAMES), "vatex": (MAX_WORDS, NUM_FRAMES), "didemo": (64, 64)}  # (Nw, Nf)
TOP_K = 10  # results per query
CANDIDATES = 500  # entries the coarse stage passes to full scoring (benchmarks/search.py: the same top 10 as
# exhaustive scoring on 10,000 videos)
MOMENTS = 3  # moments listed per search result
PER_VIDEO = 1  # results one video may take
BATCH_VIDEOS = 16  # videos per image-tower batch and per cache segment when extracting
DECODERS: int | None = None  # decoder processes when extracting; None: none on a CPU, GPU_DECODERS on a GPU
GPU_DECODERS = 8  # at most this many (one per core but one) where a GPU encodes and decoding is what limits the rate
BACKEND = "pyav"  # video decoder: PyAV decodes only the packets the track needs (decord: every one)
DEVICE = "auto"  # CUDA when present, else the CPU
PRECISION = "auto"  # the faster of fp32 and bf16 on this host, measured once (precision.py)
EVAL_PRECISION = "fp32"  # evaluate: the same numbers for the same checkpoint on every host
SCORER = "auto"  # search: TC-MGC with a trained run, else CLIP's own similarity
PORT = 8000  # tcmgc serve
HOST = "127.0.0.1"
