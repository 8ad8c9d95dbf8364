"""What collaborating peers send each other: the rollout message (a versioned binary format), and
the two transports that carry it (one process, or one process per peer over torch.distributed).

    blob = encode(msg)                      # RolloutMessage -> bytes
    msg = decode(blob, vocab_size)          # bytes -> RolloutMessage, or MalformedMessage
    msgs = decode_bundle(blob, vocab_size)  # several messages back to back (one peer's fresh + stale)
    received = exchange.share(step, {"a": blob_a})   # {peer name: its bundle} from every live peer

Rollout message, format version 1 (all integers little-endian, unsigned unless noted):

    offset  size      field
    0       4         magic b"RLMS"
    4       2         version (1)
    6       2         header size H in bytes (40 + len(generator id)); later versions may append fields
    8       4         total size of the message in bytes, checksum included
    12      4         step: the exchange round the message belongs to
    16      4         policy version: optimizer updates the generator's weights had received
    20      4         G_n: number of groups (one prompt each)
    24      4         S_n: number of sequences (completions)
    28      4         P_tok: prompt tokens in all groups
    32      4         C_tok: completion tokens in all sequences
    36      1         token id width in bytes (2 when every id < 65536, else 4)
    37      1         K: reward channels per sequence
    38      2         generator id length L
    40      L         generator id, UTF-8 (the peer's name; "<name>~<k>" for its checkpoint k updates old)
    H       G_n * 8   per group: group id (u32, unique within the step), prompt length (u32)
            S_n * 8   per sequence: group index into the table above (u32), completion length (u32)
            S_n*K*4   rewards, float32, sequence-major
            P_tok*w   prompt token ids, group after group
            C_tok*w   completion token ids, sequence after sequence
            C_tok*4   the generator's log-prob of each completion token, float32 (sampling temperature)
            ceil(C_tok/8)  completion mask, one bit per completion token (numpy packbits, big-endian
                      bit order), sequence after sequence
    end-4   4         CRC-32 (zlib) of every byte before it

A prompt is sent without padding (all its `prompt length` tokens are real). A completion is sent up
to its last valid token (`completion length`); its mask bits say which of those tokens count (a
sampled pad token inside a completion is masked, so masks are not always prefixes). Bytes per
completion token: w + 4 + 1/8 (id, log-prob, mask bit: 6.125 at micro scale, 8.125 for
vocabularies over 65,536 ids), plus the prompt once per group and 8 + 4K bytes per sequence
(`message_bytes_per_token`). `decode` rejects anything malformed (bad magic, an unknown version,
sizes that do not add up, a checksum mismatch, token ids outside the vocabulary, non-finite or
positive log-probs, non-finite rewards) with MalformedMessage naming the problem.

Transports (`Exchange.share`), both carrying the same bytes:
- `LocalExchange`: the peers live in one process and step in turn; sharing is handing the bytes on.
- `GlooExchange`: one process per peer, messages all-gathered over a torch.distributed gloo group
  (sizes first, then the padded bytes). The group lives on a TCPStore hosted outside the peers
  (the launching process, or torchrun's agent). When a collective fails (a peer died or stopped
  answering), the survivors announce themselves in the store, wait until every member has
  announced itself or been marked dead (by the launcher) or `timeout` has passed, form a new gloo
  group among themselves and repeat the exchange; the missing peers are in `dropped`, by name.
"""

from __future__ import annotations

import logging
import struct
import time
import zlib
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch

log = logging.getLogger(__name__)

MAGIC = b"RLMS"
VERSION = 1
_FIXED = struct.Struct("<4sHHIIIIIIIBBH")  # 40 bytes: magic .. generator id length
_CRC = struct.Struct("<I")
SEP = "~"  # generator id of a peer's stale checkpoint: "<name>~<updates old>"


class MalformedMessage(ValueError):
    """A rollout message that cannot be read; the message says why."""


@dataclass
class RolloutMessage:
    """One generator's groups for one step, in the learner's terms (lengths instead of masks)."""

    generator: str  # peer name, or "<name>~<k>" for its checkpoint k updates old
    step: int
    policy_version: int
    group_ids: np.ndarray  # (G_n,) int64, unique within the step (horizontal: shared across peers)
    prompts: list[np.ndarray]  # G_n arrays of prompt token ids (no padding)
    seq_group: np.ndarray  # (S_n,) index into group_ids of each sequence
    completions: list[np.ndarray]  # S_n arrays of completion token ids, up to the last valid one
    logps: list[np.ndarray]  # S_n float32 arrays: the generator's log-prob of each completion token
    masks: list[np.ndarray]  # S_n bool arrays: which completion tokens count
    rewards: np.ndarray  # (S_n, K) float32

    @property
    def owner(self) -> str:
        """The peer that generated it (its own name for a stale checkpoint's message too)."""
        return self.generator.split(SEP, 1)[0]

    @property
    def completion_tokens(self) -> int:
        """Valid completion tokens (mask bits set)."""
        return int(sum(m.sum() for m in self.masks))


def encode(msg: RolloutMessage) -> bytes:
    """The message in format version 1 (module docstring)."""
    gid = msg.generator.encode()
    S, K = len(msg.completions), msg.rewards.shape[1] if msg.rewards.ndim == 2 else 0
    if msg.rewards.shape != (S, K) or len(msg.logps) != S or len(msg.seq_group) != S or len(msg.masks) != S:
        raise ValueError(
            "encode: completions, logps, masks, seq_group and rewards disagree on the sequence count"
        )
    if any(len(c) != len(lp) or len(c) != len(m) for c, lp, m in zip(msg.completions, msg.logps, msg.masks)):
        raise ValueError("encode: a completion, its log-probs and its mask differ in length")
    if len(msg.prompts) != len(msg.group_ids):
        raise ValueError("encode: one prompt per group id")
    ids = [*msg.prompts, *msg.completions]
    top = max((int(a.max()) for a in ids if len(a)), default=0)
    width = 2 if top < 1 << 16 else 4
    dtype = np.dtype("<u2" if width == 2 else "<u4")
    P_tok = sum(len(p) for p in msg.prompts)
    C_tok = sum(len(c) for c in msg.completions)
    body = b"".join(
        [
            np.stack([msg.group_ids, [len(p) for p in msg.prompts]], 1).astype("<u4").tobytes()
            if len(msg.prompts)
            else b"",
            np.stack([msg.seq_group, [len(c) for c in msg.completions]], 1).astype("<u4").tobytes()
            if S
            else b"",
            msg.rewards.astype("<f4").tobytes(),
            np.concatenate(msg.prompts).astype(dtype).tobytes() if P_tok else b"",
            np.concatenate(msg.completions).astype(dtype).tobytes() if C_tok else b"",
            np.concatenate(msg.logps).astype("<f4").tobytes() if C_tok else b"",
            np.packbits(np.concatenate(msg.masks).astype(bool)).tobytes() if C_tok else b"",
        ]
    )
    header_size = _FIXED.size + len(gid)
    total = header_size + len(body) + _CRC.size
    head = _FIXED.pack(
        MAGIC,
        VERSION,
        header_size,
        total,
        msg.step,
        msg.policy_version,
        len(msg.prompts),
        S,
        P_tok,
        C_tok,
        width,
        K,
        len(gid),
    )
    out = head + gid + body
    return out + _CRC.pack(zlib.crc32(out))


def decode(blob: bytes, vocab_size: int | None = None) -> RolloutMessage:
    """Read one message (the whole of `blob`); MalformedMessage when anything is off."""
    msg, used = _decode_at(memoryview(blob), 0, vocab_size)
    if used != len(blob):
        raise MalformedMessage(f"{len(blob) - used} bytes after the message")
    return msg


def decode_bundle(blob: bytes, vocab_size: int | None = None) -> list[RolloutMessage]:
    """Messages sent back to back (each carries its own size)."""
    view, at, out = memoryview(blob), 0, []
    while at < len(blob):
        msg, at = _decode_at(view, at, vocab_size)
        out.append(msg)
    return out


def _decode_at(view: memoryview, at: int, vocab_size: int | None) -> tuple[RolloutMessage, int]:
    if len(view) - at < _FIXED.size + _CRC.size:
        raise MalformedMessage(f"truncated: {len(view) - at} bytes, a message has at least {_FIXED.size + 4}")
    magic, version, H, total, step, policy, G_n, S, P_tok, C_tok, width, K, L = _FIXED.unpack_from(view, at)
    if magic != MAGIC:
        raise MalformedMessage(f"bad magic {bytes(magic)!r} (expected {MAGIC!r})")
    if version != VERSION:
        raise MalformedMessage(f"format version {version}; this reader knows version {VERSION}")
    if width not in (2, 4):
        raise MalformedMessage(f"token id width {width} (expected 2 or 4)")
    if H < _FIXED.size + L or total > len(view) - at:
        raise MalformedMessage(
            f"sizes do not add up (header {H}, total {total}, {len(view) - at} bytes here)"
        )
    expected = H + 8 * G_n + 8 * S + 4 * S * K + width * (P_tok + C_tok) + 4 * C_tok + (C_tok + 7) // 8 + 4
    if total != expected:
        raise MalformedMessage(f"size {total} does not match its counts ({expected})")
    end = at + total
    (crc,) = _CRC.unpack_from(view, end - _CRC.size)
    if zlib.crc32(view[at : end - _CRC.size]) != crc:
        raise MalformedMessage("checksum mismatch")
    try:
        generator = bytes(view[at + _FIXED.size : at + _FIXED.size + L]).decode()
    except UnicodeDecodeError:
        raise MalformedMessage("generator id is not UTF-8") from None
    pos = at + H

    def take(dtype: str, count: int) -> np.ndarray:
        nonlocal pos
        arr = np.frombuffer(view, dtype=dtype, count=count, offset=pos).copy()
        pos += arr.nbytes
        return arr

    groups = take("<u4", 2 * G_n).reshape(G_n, 2).astype(np.int64)
    seqs = take("<u4", 2 * S).reshape(S, 2).astype(np.int64)
    rewards = take("<f4", S * K).reshape(S, K)
    ids_dtype = "<u2" if width == 2 else "<u4"
    prompt_ids = take(ids_dtype, P_tok).astype(np.int64)
    completion_ids = take(ids_dtype, C_tok).astype(np.int64)
    logp = take("<f4", C_tok)
    bits = np.unpackbits(take("u1", (C_tok + 7) // 8), count=C_tok).astype(bool)
    if groups[:, 1].sum() != P_tok or seqs[:, 1].sum() != C_tok:
        raise MalformedMessage("prompt or completion lengths do not add up to the token counts")
    if S and seqs[:, 0].max() >= G_n:
        raise MalformedMessage("a sequence points at a group that is not in the message")
    if len(np.unique(groups[:, 0])) != G_n:
        raise MalformedMessage("duplicate group ids")
    if vocab_size is not None and max(prompt_ids.max(initial=0), completion_ids.max(initial=0)) >= vocab_size:
        raise MalformedMessage(f"token id outside the vocabulary (size {vocab_size})")
    if not np.isfinite(logp).all() or (logp > 1e-4).any():
        raise MalformedMessage("log-probs must be finite and <= 0")
    if not np.isfinite(rewards).all():
        raise MalformedMessage("non-finite reward")
    msg = RolloutMessage(
        generator=generator,
        step=step,
        policy_version=policy,
        group_ids=groups[:, 0],
        prompts=np.split(prompt_ids, np.cumsum(groups[:, 1])[:-1]) if G_n else [],
        seq_group=seqs[:, 0],
        completions=np.split(completion_ids, np.cumsum(seqs[:, 1])[:-1]) if S else [],
        logps=np.split(logp, np.cumsum(seqs[:, 1])[:-1]) if S else [],
        masks=np.split(bits, np.cumsum(seqs[:, 1])[:-1]) if S else [],
        rewards=rewards,
    )
    return msg, end


def message_bytes_per_token(
    tokens_per_completion: float, prompt_tokens: float, group_size: int, width: int = 2, K: int = 1
) -> float:
    """Bytes per completion token of a message of whole groups (vertical layout), from the format:
    w + 4 + 1/8 per completion token, the prompt (w per token) and 8 bytes once per group, 8 + 4K
    per sequence; the fixed header is left out (it is per message, not per token)."""
    per_seq = (
        tokens_per_completion * (width + 4 + 1 / 8) + 8 + 4 * K + (prompt_tokens * width + 8) / group_size
    )
    return per_seq / tokens_per_completion


# ---------------------------------------------------------------------------------------------
# Transports


class Exchange:
    """Hands every live peer the bundles of every live peer, for one step."""

    dropped: dict[str, str]  # peer name -> why it is no longer heard from

    def share(self, step: int, outgoing: dict[str, bytes]) -> dict[str, bytes]:
        """`outgoing`: this process's peers' bundles -> every live peer's bundle, by peer name."""
        raise NotImplementedError

    def leave(self, name: str, reason: str) -> None:
        """Peer `name` (hosted here) stops taking part."""

    def close(self) -> None:
        pass


class LocalExchange(Exchange):
    """All peers in this process: what they send is what they receive (as bytes, like the wire)."""

    def __init__(self) -> None:
        self.dropped = {}

    def share(self, step: int, outgoing: dict[str, bytes]) -> dict[str, bytes]:
        return {name: bytes(blob) for name, blob in outgoing.items()}


def _store_key(*parts: object) -> str:
    return "collab/" + "/".join(map(str, parts))


def mark_dead(store, name: str, reason: str) -> None:
    """What a launcher calls when a peer's process exits abnormally: survivors stop waiting for it."""
    store.set(_store_key("dead", name), reason)


class GlooExchange(Exchange):
    """One peer per process; messages all-gathered over a gloo group, re-formed without peers that
    die or stop answering (module docstring)."""

    def __init__(self, store, name: str, members: list[str], timeout: float) -> None:
        import torch.distributed as dist

        self.dist, self.store, self.name = dist, store, name
        self.members = list(members)  # live peers, in rank order
        self.timeout = timeout
        self.epoch = 0
        self.dropped = {}
        self._init_group()

    def _init_group(self) -> None:
        prefix = self.dist.PrefixStore(_store_key("group", self.epoch), self.store)
        self.dist.init_process_group(
            "gloo",
            store=prefix,
            rank=self.members.index(self.name),
            world_size=len(self.members),
            timeout=timedelta(seconds=self.timeout),
        )

    def share(self, step: int, outgoing: dict[str, bytes]) -> dict[str, bytes]:
        (blob,) = outgoing.values()
        while True:
            try:
                return self._all_gather(blob)
            except RuntimeError as exc:  # gloo: "Connection closed by peer", a timeout, ...
                log.warning("peer %s: exchange at step %d failed (%s); regrouping", self.name, step, exc)
                self._regroup(step)

    def _all_gather(self, blob: bytes) -> dict[str, bytes]:
        dist, n = self.dist, len(self.members)
        if n == 1:
            return {self.name: blob}
        size = torch.tensor([len(blob)], dtype=torch.int64)
        sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(n)]
        dist.all_gather(sizes, size)
        top = int(max(s.item() for s in sizes))
        mine = torch.zeros(top, dtype=torch.uint8)
        mine[: len(blob)] = torch.frombuffer(bytearray(blob), dtype=torch.uint8)
        bufs = [torch.zeros(top, dtype=torch.uint8) for _ in range(n)]
        dist.all_gather(bufs, mine)
        return {m: bufs[i][: int(sizes[i].item())].numpy().tobytes() for i, m in enumerate(self.members)}

    def _regroup(self, step: int) -> None:
        """Announce this peer as alive in a new epoch, wait for the other members (or their death
        marks, or the timeout), and form a gloo group of those that answered."""
        self.epoch += 1
        self.store.set(_store_key("alive", self.epoch, self.name), "1")
        deadline = time.monotonic() + self.timeout
        while True:
            alive = [m for m in self.members if self.store.check([_store_key("alive", self.epoch, m)])]
            dead = [m for m in self.members if m not in alive and self.store.check([_store_key("dead", m)])]
            if len(alive) + len(dead) == len(self.members) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for m in self.members:
            if m not in alive:
                why = (
                    self.store.get(_store_key("dead", m)).decode()
                    if m in dead
                    else f"no answer within {self.timeout:g} s"
                )
                self.dropped[m] = f"lost at step {step}: {why}"
        self.members = alive
        try:
            self.dist.destroy_process_group()
        except Exception:  # the broken group may not shut down cleanly; a new one replaces it
            log.debug("peer %s: destroying the old group failed", self.name, exc_info=True)
        self._init_group()

    def leave(self, name: str, reason: str) -> None:
        """Say so in the store (the others regroup without waiting for the timeout) and quit the group."""
        mark_dead(self.store, name, f"left: {reason}")
        self.close()

    def close(self) -> None:
        if self.dist.is_initialized():
            self.dist.destroy_process_group()
