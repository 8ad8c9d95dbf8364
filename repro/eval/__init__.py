"""Evaluation: the micro-world / shared trainer evaluator (repro.eval.micro), real-model benchmarks
through lm-eval on local files (repro.eval.lm_eval_tasks) and the `repro eval` entry
(repro.eval.run). Import the submodules; this package imports nothing, so repro.tasks can use
repro.eval.lm_eval_tasks without pulling in the evaluator that itself uses repro.tasks."""
