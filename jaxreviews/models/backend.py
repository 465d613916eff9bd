"""What "auto" picks on the backend a program runs on: tuned on a 2-core CPU is not tuned for a GPU.

CPU (measured on the project's 2-core machine; recurrent.py and cnn.py hold the figures): kernels
that walk their data in cache-sized chunks (the chunked LSTM, the CNN's max over time in chunks of
~2048 tokens) and packed rows for every text model.

Accelerators (GPU, TPU), from what the first H200 run (2026-12-04) showed:
  * no Python-unrolled chunk loops: the LSTM's and GRU's input projection is one matmul before
    one scan ("hoisted", as cuDNN does), and the CNN's max over time is one chunk;
  * the flat recurrent models (rnn, bilstm with an LSTM/GRU encoder) read padded, length-bucketed
    batches: a packed row is at least as long as the longest review, and the recurrence steps
    through every position of it (548 steps a batch on Musical Instruments, against ~101 for the
    PyTorch reference's length-sorted batches); a bucket's batch steps through its own length.
The kernel choices give the same numbers as the CPU's (tests/test_models_masking.py); the layout
changes which reviews share a batch, so a run keeps the layout it started with (model.json).
"""
from __future__ import annotations

import jax
import ml_collections

ACCELERATORS = frozenset({"gpu", "cuda", "rocm", "tpu"})
RECURRENT_KINDS = ("lstm", "gru")
FLAT_RECURRENT_MODELS = ("rnn", "bilstm")
HOIST_BELOW_ROWS = 128  # CPU, GRU: hoist the input projection when a step has fewer rows than this
CPU_CHUNK_TOKENS = 2048  # CPU, the CNN's max over time: a chunk's tap matrix stays in cache


def current() -> str:
    """The backend of the programs this process compiles ("cpu", "gpu", "tpu")."""
    return jax.default_backend()


def is_accelerator(backend: str | None = None) -> bool:
    return (backend or current()) in ACCELERATORS


def recurrent_projection(cell: str, rows: int, backend: str | None = None) -> str:
    """`input_projection="auto"` of a recurrent layer whose steps take `rows` sequences."""
    if is_accelerator(backend):
        return "hoisted"
    if cell == "lstm":
        return "chunked"
    return "hoisted" if rows < HOIST_BELOW_ROWS else "fused"


def conv_chunk_tokens(backend: str | None = None) -> int | None:
    """Tokens per chunk of the CNN's max over time; None: the whole batch in one chunk."""
    return None if is_accelerator(backend) else CPU_CHUNK_TOKENS


def is_flat_recurrent(model: ml_collections.ConfigDict) -> bool:
    return model.name in FLAT_RECURRENT_MODELS and model.encoder.kind in RECURRENT_KINDS


def batch_layout(model: ml_collections.ConfigDict, backend: str | None = None) -> str:
    """`data.layout="auto"` of a text model: "packed", or "padded" for the flat recurrent models
    on an accelerator."""
    return "padded" if is_accelerator(backend) and is_flat_recurrent(model) else "packed"


def encoders(model: ml_collections.ConfigDict) -> dict[str, str]:
    """{option path: encoder kind} of the model's sequence encoders."""
    names = {"rnn": ("encoder",), "bilstm": ("encoder",), "han": ("word_encoder", "sentence_encoder"),
             "han_upa": ("word_encoder", "sentence_encoder")}.get(model.name, ())
    return {f"model.{name}": model[name].kind for name in names if name in model}


def choices(model: ml_collections.ConfigDict, layout: str, backend: str | None = None) -> dict[str, str]:
    """What the run's "auto" options resolve to on `backend`, for the log and model.json."""
    backend = backend or current()
    picked = {"backend": backend, "data.layout": layout}
    kinds = encoders(model)
    for path, kind in kinds.items():
        option = model[path.split(".", 1)[1]].input_projection
        if kind in RECURRENT_KINDS and option == "auto":
            rule = recurrent_projection(kind, 0, backend)
            if kind == "gru" and not is_accelerator(backend):
                rule = f"hoisted below {HOIST_BELOW_ROWS} sequences a step, else fused"
            picked[f"{path}.input_projection"] = rule
    if model.name == "cnn" or "cnn" in kinds.values():
        tokens = conv_chunk_tokens(backend)
        picked["cnn max over time"] = "one chunk" if tokens is None else f"chunks of ~{tokens} tokens"
    return picked
