"""Held-out evaluation for any task (repro.tasks.Task): greedy and sampled accuracy on the target task, and
log-likelihood multiple-choice accuracy on the retention tasks."""

from __future__ import annotations

import torch

from repro.rollout import HFGenerateBackend


@torch.no_grad()
def accuracy(
    model, backend: HFGenerateBackend, problems, verify, *, greedy: bool, max_new_tokens: int, seed: int = 0
) -> float:
    roll = backend.generate(
        model,
        [p.prompt for p in problems],
        n=1,
        max_new_tokens=max_new_tokens,
        temperature=1.0,
        greedy=greedy,
        seed=seed,
    )
    return sum(verify(t, p.answer) for t, p in zip(roll.texts, problems)) / max(1, len(problems))


def mc_accuracy(model, tok, items, batch_size: int | None = None) -> float:
    """Share of items whose gold choice has the highest summed log-likelihood after the prompt."""
    if not items:
        return float("nan")
    scores = mc_scores(model, tok, items, batch_size)
    return sum(int(s.argmax().item() == it.gold) for s, it in zip(scores, items)) / len(items)


@torch.no_grad()
def mc_scores(model, tok, items, batch_size: int | None = None) -> list[torch.Tensor]:
    """Per item, the summed log-likelihood of each choice's tokens after the prompt; all
    (item, choice) texts in one forward pass, or `batch_size` texts at a time (long prompts)."""
    texts, owners, n_prompt = [], [], []
    for i, it in enumerate(items):
        plen = len(tok(it.prompt)["input_ids"])
        for c in it.choices:
            texts.append(f"{it.prompt} {c}")
            owners.append(i)
            n_prompt.append(plen)
    was_training = model.training
    model.eval()
    step = batch_size or len(texts)
    scores = torch.cat(
        [
            _choice_logp(model, tok, texts[i : i + step], n_prompt[i : i + step])
            for i in range(0, len(texts), step)
        ]
    )
    model.train(was_training)
    return list(scores.split([len(it.choices) for it in items]))


def _choice_logp(model, tok, texts: list[str], n_prompt: list[int]) -> torch.Tensor:
    """(B,) summed log-likelihood of the tokens after the first n_prompt[i] of each text."""
    old_side = tok.padding_side
    tok.padding_side = "right"
    enc = tok(texts, return_tensors="pt", padding=True)
    tok.padding_side = old_side
    logits = model(
        **{k: v.to(model.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
    ).logits
    ids = enc["input_ids"].to(logits.device)
    logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    logp = logp.cpu()
    pos = torch.arange(logp.shape[1])[None, :] + 1  # position of the predicted token
    lengths = enc["attention_mask"].sum(1)
    choice_mask = (pos >= torch.tensor(n_prompt)[:, None]) & (pos < lengths[:, None])
    return (logp * choice_mask).sum(1)
