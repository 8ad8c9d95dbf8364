"""The rollout message format (repro/trainers/collab_wire.py): round trips, its size per token, and
every kind of malformed message rejected with a reason."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from repro.trainers.collab_wire import (
    MalformedMessage,
    RolloutMessage,
    decode,
    decode_bundle,
    encode,
    message_bytes_per_token,
)


@st.composite
def messages(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    vocab = draw(st.sampled_from([50, 70_000]))
    G_n, n, K = draw(st.integers(0, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 2))
    prompts = [rng.integers(0, vocab, rng.integers(1, 6)) for _ in range(G_n)]
    lengths = [int(rng.integers(0, 7)) for _ in range(G_n * n)]
    masks = []
    for L in lengths:
        m = rng.random(L) < 0.85
        if L:
            m[-1] = True  # sent up to the last valid token
        masks.append(m)
    return RolloutMessage(
        generator=draw(st.sampled_from(["a", "m1lora", "peer~3", "ü"])),
        step=draw(st.integers(0, 2**32 - 1)),
        policy_version=draw(st.integers(0, 1000)),
        group_ids=rng.permutation(100)[:G_n].astype(np.int64),
        prompts=prompts,
        seq_group=np.repeat(np.arange(G_n), n),
        completions=[rng.integers(0, vocab, L) for L in lengths],
        logps=[np.where(m, -rng.random(len(m)) * 5, 0).astype(np.float32) for m in masks],
        masks=masks,
        rewards=rng.random((G_n * n, K)).astype(np.float32),
    ), vocab


def same(a: RolloutMessage, b: RolloutMessage) -> bool:
    arrays = ("prompts", "completions", "logps", "masks")
    return (
        (a.generator, a.step, a.policy_version) == (b.generator, b.step, b.policy_version)
        and np.array_equal(a.group_ids, b.group_ids)
        and np.array_equal(a.seq_group, b.seq_group)
        and np.array_equal(a.rewards, b.rewards)
        and all(len(getattr(a, k)) == len(getattr(b, k)) for k in arrays)
        and all(np.array_equal(x, y) for k in arrays for x, y in zip(getattr(a, k), getattr(b, k)))
    )


@given(msg=messages())
def test_decode_inverts_encode(msg):
    msg, vocab = msg
    blob = encode(msg)
    assert same(decode(blob, vocab), msg)
    (again,) = decode_bundle(blob, vocab)
    assert same(again, msg)


@given(a=messages(), b=messages())
def test_a_bundle_is_messages_back_to_back(a, b):
    (a, va), (b, vb) = a, b
    got = decode_bundle(encode(a) + encode(b), max(va, vb))
    assert len(got) == 2 and same(got[0], a) and same(got[1], b)


def uniform(G_n=4, n=12, prompt_len=25, comp_len=10, vocab=130, K=1) -> RolloutMessage:
    rng = np.random.default_rng(0)
    return RolloutMessage(
        generator="m1",
        step=1,
        policy_version=0,
        group_ids=np.arange(G_n),
        prompts=[rng.integers(0, vocab, prompt_len) for _ in range(G_n)],
        seq_group=np.repeat(np.arange(G_n), n),
        completions=[rng.integers(0, vocab, comp_len) for _ in range(G_n * n)],
        logps=[-np.ones(comp_len, np.float32) for _ in range(G_n * n)],
        masks=[np.ones(comp_len, bool) for _ in range(G_n * n)],
        rewards=np.zeros((G_n * n, K), np.float32),
    )


@pytest.mark.parametrize("vocab,width", [(130, 2), (151_936, 4)])
def test_bytes_per_token_is_what_the_format_says(vocab, width):
    msg = uniform(vocab=vocab)
    blob = encode(msg)
    header = 40 + len(msg.generator) + 4  # fixed fields, generator id, checksum
    per_token = (len(blob) - header) / msg.completion_tokens
    assert per_token == pytest.approx(message_bytes_per_token(10, 25, 12, width=width), abs=0.01)
    # The id and the log-prob are 2 + 4 (micro vocab) or 4 + 4 bytes: the paper's "~8 bytes per token".
    long = message_bytes_per_token(300, 100, 12, width=4)
    assert 8.1 < long < 8.3


def corrupt(blob: bytes, at: int, value: bytes, fix_crc: bool = True) -> bytes:
    out = bytearray(blob)
    out[at : at + len(value)] = value
    if fix_crc:
        out[-4:] = struct.pack("<I", zlib.crc32(bytes(out[:-4])))
    return bytes(out)


def test_malformed_messages_are_rejected_with_a_reason():
    msg = uniform(G_n=1, n=2, prompt_len=3, comp_len=4)
    blob = encode(msg)
    cases = {
        "bad magic": corrupt(blob, 0, b"XXXX"),
        "format version": corrupt(blob, 4, struct.pack("<H", 9)),
        "checksum": corrupt(blob, len(blob) // 2, b"\xff", fix_crc=False),
        "truncated": blob[:20],
        "does not match its counts": corrupt(blob, 24, struct.pack("<I", 3)),
        "after the message": blob + b"\x00",
    }
    for reason, bad in cases.items():
        with pytest.raises(MalformedMessage, match=reason):
            decode(bad, 130)
    with pytest.raises(MalformedMessage, match="outside the vocabulary"):
        decode(blob, 2)
    positive = uniform(G_n=1, n=2, prompt_len=3, comp_len=4)
    positive.logps[0][1] = 0.5
    with pytest.raises(MalformedMessage, match="log-probs"):
        decode(encode(positive), 130)
    nan = uniform(G_n=1, n=2, prompt_len=3, comp_len=4)
    nan.rewards[1, 0] = np.nan
    with pytest.raises(MalformedMessage, match="reward"):
        decode(encode(nan), 130)
