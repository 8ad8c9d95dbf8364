"""Where models run and in what precision: the config's `device` and `dtype`.

    device = resolve_device(cfg.device)         # "auto" -> cuda when torch sees a GPU, else cpu
    dtype = compute_dtype(cfg.dtype, device)    # "auto" -> float32 on cpu, bfloat16 on cuda
    model = place(model, device, dtype)                 # a policy: fp32 weights, forward in `dtype`
    teacher = place(teacher, device, dtype, frozen=True)  # a frozen model: weights cast to `dtype`

Precision follows mixed-precision training as accelerate, TRL and verl do it: the weights the
optimiser updates stay in the dtype they were loaded in (float32 master weights: a bf16 weight
cannot absorb an AdamW update of 1e-6 relative size, it rounds away), and forward passes run under
`torch.autocast` in the compute dtype (accelerate's `prepare_model` wraps `model.forward` the same
way). Frozen models (teachers) are simply cast, which halves their memory. `model.dtype` of an HF
model config is the dtype its weights load in; keep it float32 for a model that trains.

On CPU with `device: auto` and `dtype: auto` every function here is a no-op, so CPU numbers are
exactly what they were before devices existed (the golden tests check this). Tests run on CPU;
nothing here assumes CUDA.
"""

from __future__ import annotations

import types

import torch

from repro.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")


def resolve_device(name: str) -> torch.device:
    """`device` (auto | cpu | cuda) -> torch.device; ConfigError for cuda without a GPU."""
    if name not in DEVICES:
        raise ConfigError(f"device: expected one of {', '.join(DEVICES)}, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device: cuda, but torch {torch.__version__} sees no GPU (a CPU build, or no GPU on this "
            "node); use device=auto or device=cpu"
        )
    return torch.device(name)


def compute_dtype(name: str, device: torch.device) -> torch.dtype:
    """`dtype` (auto | float32 | bfloat16 | float16) on `device`: auto is bfloat16 on CUDA and
    float32 elsewhere (CPUs here have no fast bf16 kernels: STACK-NOTES, ~1 GFLOP/s)."""
    if name not in DTYPES:
        raise ConfigError(f"dtype: expected one of {', '.join(DTYPES)}, got {name!r}")
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


def of(cfg) -> tuple[torch.device, torch.dtype]:
    """(device, compute dtype) of a job config (`device`, `dtype`; both default to auto)."""
    device = resolve_device(str(cfg.get("device") or "auto"))
    return device, compute_dtype(str(cfg.get("dtype") or "auto"), device)


def place(model: torch.nn.Module, device: torch.device, dtype: torch.dtype, frozen: bool = False):
    """Move `model` to `device`. A frozen model is cast to `dtype`; a trained one keeps its weights'
    dtype and runs its forward under autocast in `dtype` when that differs. Returns the model."""
    model.to(device)
    model.repro_compute_dtype = dtype  # what a rollout engine built from this model runs in
    weights = next(model.parameters()).dtype
    if dtype == weights:
        return model
    if frozen:
        return model.to(dtype)
    # Outputs come back in `dtype`; the trainers take log-softmax of `.float()` logits. Bound with
    # MethodType (as accelerate does), so a deep copy of the model runs its own weights.
    forward = torch.autocast(device_type=device.type, dtype=dtype)(type(model).forward)
    model.forward = types.MethodType(forward, model)
    return model


def compute_dtype_of(model: torch.nn.Module) -> torch.dtype:
    """The compute dtype `place` gave `model` (a peft wrapper finds its base model's), else the
    dtype of its weights."""
    return getattr(model, "repro_compute_dtype", None) or next(model.parameters()).dtype


def describe(device: torch.device, dtype: torch.dtype) -> str:
    """'cuda (NVIDIA H200), bfloat16' / 'cpu, float32': what a run record's provenance says."""
    where = device.type
    if device.type == "cuda":
        where += f" ({torch.cuda.get_device_name(device)})"
    return f"{where}, {str(dtype).removeprefix('torch.')}"
