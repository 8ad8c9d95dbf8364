"""lm-eval on the fixture files with a tiny in-memory model: every benchmark loads its local
files offline and returns metrics in [0, 1]; `repro eval` writes its JSON record."""

import json

import pytest
from omegaconf import OmegaConf

from repro import cli, tracking
from repro.eval.lm_eval_tasks import TASKS, evaluate

from .conftest import GSM8K, MMLU_ROWS, TRUTHFULQA


def eval_cfg(**kw):
    cfg = {
        "limit": None,
        "batch_size": 4,
        "gsm8k": {"num_fewshot": 0, "max_new_tokens": 6, "limit": None, "chat_template": None},
        "mmlu": {"num_fewshot": 2, "subjects": None, "limit": None, "chat_template": False},
        "truthfulqa": {"qa_primer": True, "limit": None, "chat_template": False},
    }
    cfg.update(kw)
    return OmegaConf.create(cfg)


def test_all_benchmarks_offline(tiny_lm, data_root):
    model, tok = tiny_lm
    metrics, counts = evaluate(model, tok, TASKS, data_root, eval_cfg(), chat=False)
    assert counts == {
        "gsm8k": len(GSM8K),
        "mmlu": sum(len(r) for r in MMLU_ROWS.values()),
        "truthfulqa_mc1": len(TRUTHFULQA),
        "truthfulqa_mc2": len(TRUTHFULQA),
    }
    expected = {
        "eval/gsm8k/exact_match_strict",
        "eval/gsm8k/exact_match_flexible",
        "eval/mmlu/acc",
        "eval/mmlu/toy_math/acc",
        "eval/mmlu/toy_colors/acc",
        "eval/truthfulqa_mc1/acc",
        "eval/truthfulqa_mc2/acc",
    }
    assert set(metrics) == expected
    assert all(0.0 <= v <= 1.0 for v in metrics.values()), metrics
    # MMLU overall is the example-weighted mean of its subjects (equal sizes here).
    per_subject = [metrics["eval/mmlu/toy_math/acc"], metrics["eval/mmlu/toy_colors/acc"]]
    assert metrics["eval/mmlu/acc"] == pytest.approx(sum(per_subject) / 2)


def test_limit_and_subject_subset(tiny_lm, data_root):
    model, tok = tiny_lm
    cfg = eval_cfg(limit=1)
    cfg.mmlu.subjects = ["toy_colors"]
    cfg.mmlu.num_fewshot = 0
    metrics, counts = evaluate(model, tok, ["mmlu", "truthfulqa_mc2"], data_root, cfg, chat=False)
    assert counts == {"mmlu": 1, "truthfulqa_mc2": 1}
    assert "eval/mmlu/toy_math/acc" not in metrics


def test_cli_eval_writes_record(tiny_lm, data_root, tmp_path, monkeypatch, capsys):
    model, tok = tiny_lm
    folder = tmp_path / "tiny_model"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    monkeypatch.setenv("REPRO_DATA_DIR", str(data_root))
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    status = cli.main(
        [
            "eval",
            "model=qwen3_0_6b_base",
            f"model.path={folder}",
            "model.name=tiny",
            "model.dtype=float32",
            "tasks=[gsm8k,truthfulqa_mc1]",
            "eval.limit=2",
            "eval.gsm8k.max_new_tokens=4",
        ]
    )
    assert status == 0
    out = capsys.readouterr().out
    assert "eval/truthfulqa_mc1/acc" in out
    (record_path,) = (tmp_path / "results" / "eval" / "tiny").glob("*.json")
    record = json.loads(record_path.read_text())
    assert record["counts"] == {"gsm8k": 2, "truthfulqa_mc1": 2}
    assert set(record["metrics"]) == {
        "eval/gsm8k/exact_match_strict",
        "eval/gsm8k/exact_match_flexible",
        "eval/truthfulqa_mc1/acc",
    }
    logged = tracking.client(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(record["mlflow_run_id"])
    assert logged.data.metrics["eval/truthfulqa_mc1/acc"] == pytest.approx(
        record["metrics"]["eval/truthfulqa_mc1/acc"], abs=1e-6
    )


def test_cli_eval_missing_data_is_a_config_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REPRO_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path / "cache"))
    # The data check comes before any model is loaded (no download attempted).
    status = cli.main(["eval", "tasks=[gsm8k]"])
    assert status == 2
    assert "gsm8k/test.jsonl" in capsys.readouterr().err
