"""Task worlds: prompts, gold answers, verifiers, eval splits and (for micro) a pretraining corpus."""

from repro.tasks.arith import ArithWorld, extract_answer, verify

__all__ = ["ArithWorld", "extract_answer", "verify"]
