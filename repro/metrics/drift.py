"""State drift: how far a post-trained model's states moved from the base model's.

A state is the prompt plus a generated prefix, s_t = (x, y_<t). Roll both models out on the
same prompts, cut the completions into prefix states, featurise them lexically and compare:

    base = prefix_states(prompts, base_completions, every=8)
    post = prefix_states(prompts, post_completions, every=8)
    drift_report(base, post)  # {"drift/mmd2": ..., "drift/centroid": ..., ...}

One kernel per comparison set: `drift_report(base, post, bandwidth=h)` with h fixed once from the
base model's own states (`within_bandwidth(featurize(base_greedy))`, repro.eval.micro.HeldOut), so
every arm and every evaluation of a base is measured with the same RBF kernel; the per-comparison
median heuristic (which moves with each arm's states) stays beside it as `drift/mmd2_median`.
`drop_words(completions, words)` removes format words (a solution style's) before the states are
cut, for an MMD that ignores style.

Features are hashed n-gram counts over whitespace tokens with a keyed blake2b hash, so they are
the same in every process (Python's `hash()` is salted per process). All pairwise work is one
matrix product: fine up to a few thousand states per side (O(N^2) memory).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np
from scipy.stats import wasserstein_distance

from repro.errors import ConfigError


def _ngrams(text: str, n: int) -> list[str]:
    """Whitespace-token n-grams of one text, each joined by a space (tokens hold no whitespace)."""
    tokens = text.split()
    return [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def _check_orders(n: int | Iterable[int], key: str) -> tuple[int, ...]:
    orders = (n,) if isinstance(n, int) else tuple(n)
    if not orders or any(not isinstance(k, int) or k < 1 for k in orders):
        raise ConfigError(f"drift: {key} must be positive n-gram orders, got {n!r}")
    return orders


def featurize(
    states: Sequence[str], n: int | Iterable[int] = (1, 2), dim: int = 2**12, seed: int = 0
) -> np.ndarray:
    """Hashed n-gram counts of each state, rows L2-normalised: (N,) strings -> (N, dim) float64.

    Each n-gram of each order in `n` adds 1 to column blake2b(gram, salt=seed) mod dim. A state
    with no n-gram (empty text) stays an all-zero row.
    """
    orders = _check_orders(n, "n")
    if not isinstance(dim, int) or dim < 1:
        raise ConfigError(f"drift: dim must be a positive int, got {dim!r}")
    if not 0 <= seed < 2**128:
        raise ConfigError(f"drift: seed must be in [0, 2**128), got {seed}")
    salt = seed.to_bytes(16, "little")
    column: dict[str, int] = {}  # hash each distinct gram once
    rows, cols = [], []
    for i, text in enumerate(states):
        for k in orders:
            for gram in _ngrams(text, k):
                if gram not in column:
                    digest = hashlib.blake2b(gram.encode(), digest_size=8, salt=salt).digest()
                    column[gram] = int.from_bytes(digest, "little") % dim
                rows.append(i)
                cols.append(column[gram])
    X = np.zeros((len(states), dim))  # (N, dim)
    np.add.at(X, (np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)), 1.0)
    norm = np.linalg.norm(X, axis=1, keepdims=True)  # (N, 1)
    return X / np.where(norm > 0, norm, 1.0)


def _check_pair(X: np.ndarray, Y: np.ndarray, min_rows: int) -> tuple[np.ndarray, np.ndarray]:
    X, Y = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)
    if X.ndim != 2 or Y.ndim != 2 or X.shape[1] != Y.shape[1]:
        raise ConfigError(f"drift: X and Y must be (N, d) and (M, d), got {X.shape} and {Y.shape}")
    if len(X) < min_rows or len(Y) < min_rows:
        raise ConfigError(f"drift: need at least {min_rows} rows per set, got {len(X)} and {len(Y)}")
    return X, Y


def _sq_dists(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (N, d), (M, d) -> (N, M), via |a|^2 + |b|^2 - 2 a.b."""
    d2 = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * (A @ B.T)
    return np.maximum(d2, 0.0)  # rounding can leave tiny negatives


def median_bandwidth(X: np.ndarray, Y: np.ndarray) -> float:
    """Median heuristic: the median Euclidean distance over all distinct pairs of the pooled sample.

    If more than half the pairs coincide (median 0), the median of the non-zero distances; if all
    points coincide, 1.0 (any bandwidth gives the same kernel values then).
    """
    X, Y = _check_pair(X, Y, min_rows=1)
    return _median_bandwidth(_sq_dists(X, X), _sq_dists(Y, Y), _sq_dists(X, Y))


def within_bandwidth(X: np.ndarray) -> float:
    """Median heuristic within one sample: the median Euclidean distance over its distinct pairs
    (fallbacks as `median_bandwidth`). Computed once from the base model's states, it fixes one
    kernel for every comparison against that base. Needs >= 2 rows."""
    X, _ = _check_pair(X, X, min_rows=2)
    dxx = _sq_dists(X, X)
    return _median_of(np.sqrt(dxx[np.triu_indices_from(dxx, k=1)]))


def _median_bandwidth(dxx: np.ndarray, dyy: np.ndarray, dxy: np.ndarray) -> float:
    pooled = np.concatenate(
        [dxx[np.triu_indices_from(dxx, k=1)], dyy[np.triu_indices_from(dyy, k=1)], dxy.ravel()]
    )
    return _median_of(np.sqrt(pooled))


def _median_of(dist: np.ndarray) -> float:
    """Median of pairwise distances; of the non-zero ones if that is 0; 1.0 if all are 0."""
    med = float(np.median(dist)) if dist.size else 0.0
    if med == 0.0:
        positive = dist[dist > 0]
        med = float(np.median(positive)) if positive.size else 1.0
    return med


def mmd2_unbiased(X: np.ndarray, Y: np.ndarray, bandwidth: float | None = None) -> float:
    """Unbiased MMD^2 between samples X (m, d) and Y (n, d) with an RBF kernel (Gretton et al.
    2012, eq. 3): mean of k over distinct X pairs + same for Y - 2 * mean of k over X-Y pairs,
    k(a, b) = exp(-|a - b|^2 / (2 bandwidth^2)).

    bandwidth=None uses the median heuristic over the pooled pairwise distances (ours: the paper
    names the heuristic family but not its bandwidth). Can be slightly negative when X and Y come
    from the same distribution. Needs m, n >= 2.
    """
    X, Y = _check_pair(X, Y, min_rows=2)
    dxx, dyy, dxy = _sq_dists(X, X), _sq_dists(Y, Y), _sq_dists(X, Y)  # (m, m), (n, n), (m, n)
    if bandwidth is None:
        bandwidth = _median_bandwidth(dxx, dyy, dxy)
    return _mmd2_of(dxx, dyy, dxy, bandwidth)


def _mmd2_of(dxx: np.ndarray, dyy: np.ndarray, dxy: np.ndarray, bandwidth: float) -> float:
    """Unbiased MMD^2 from the squared-distance matrices (m, m), (n, n), (m, n)."""
    m, n = len(dxx), len(dyy)
    if not bandwidth > 0:
        raise ConfigError(f"drift: bandwidth must be > 0, got {bandwidth}")
    gamma = 1.0 / (2.0 * bandwidth**2)
    kxx, kyy, kxy = np.exp(-gamma * dxx), np.exp(-gamma * dyy), np.exp(-gamma * dxy)
    # Unbiased: the i == j terms (k = 1 up to rounding) are left out of the within-set means.
    xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(xx + yy - 2.0 * kxy.mean())


def centroid_distance(X: np.ndarray, Y: np.ndarray) -> float:
    """Euclidean distance between the mean feature vectors of X (m, d) and Y (n, d)."""
    X, Y = _check_pair(X, Y, min_rows=1)
    return float(np.linalg.norm(X.mean(0) - Y.mean(0)))


def sliced_wasserstein(X: np.ndarray, Y: np.ndarray, n_projections: int = 128, seed: int = 0) -> float:
    """Sliced Wasserstein-1: the 1-D W1 (scipy.stats.wasserstein_distance) between projections of
    X (m, d) and Y (n, d) on random unit directions (seeded), averaged over `n_projections`
    directions. Sample sizes may differ."""
    X, Y = _check_pair(X, Y, min_rows=1)
    if n_projections < 1:
        raise ConfigError(f"drift: n_projections must be >= 1, got {n_projections}")
    theta = np.random.default_rng(seed).standard_normal((X.shape[1], n_projections))  # (d, P)
    theta /= np.linalg.norm(theta, axis=0, keepdims=True)
    px, py = X @ theta, Y @ theta  # (m, P), (n, P)
    return float(np.mean([wasserstein_distance(px[:, p], py[:, p]) for p in range(n_projections)]))


def jaccard(states_a: Sequence[str], states_b: Sequence[str], n: int = 2) -> float:
    """|A & B| / |A | B| for the sets of exact whitespace-token n-grams of each side's states.

    n-grams do not cross state boundaries. Two sides with no n-gram at all count as identical (1.0).
    """
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"drift: jaccard n must be a positive int, got {n!r}")
    a = {g for s in states_a for g in _ngrams(s, n)}
    b = {g for s in states_b for g in _ngrams(s, n)}
    union = a | b
    return len(a & b) / len(union) if union else 1.0


def prefix_states(
    prompts: Sequence[str], completions: Sequence[Sequence[str]], every: int = 8, sep: str = " "
) -> list[str]:
    """Cut each completion into prefix states s_t = (x, y_<t) every `every` tokens.

    `completions[i]` is the token list of the completion of `prompts[i]` (eos excluded). State
    strings are `sep.join([prompt, *tokens[:t]])` for t = 0, every, 2*every, ... <= len(tokens):
    the prompt alone is a state (the first decision), and so is the full completion when its
    length is a multiple of `every` (the decision to stop). Use sep=" " for word lists and
    sep="" for tokenizer pieces that carry their own leading spaces.
    """
    if len(prompts) != len(completions):
        raise ConfigError(
            f"drift: prompts and completions must pair up, got {len(prompts)} and {len(completions)}"
        )
    if not isinstance(every, int) or every < 1:
        raise ConfigError(f"drift: every must be a positive int, got {every!r}")
    return [
        sep.join([prompt, *tokens[:t]])
        for prompt, tokens in zip(prompts, completions, strict=True)
        for t in range(0, len(tokens) + 1, every)
    ]


def drop_words(completions: Sequence[str], words: Iterable[str]) -> list[str]:
    """Each whitespace-tokenised completion without the tokens in `words` (e.g. a solution
    style's format words), re-joined by single spaces."""
    drop = frozenset(words)
    return [" ".join(w for w in c.split() if w not in drop) for c in completions]


def drift_report(
    base_states: Sequence[str],
    states: Sequence[str],
    *,
    n: int | Iterable[int] = (1, 2),
    dim: int = 2**12,
    seed: int = 0,
    bandwidth: float | None = None,
    n_projections: int = 128,
    jaccard_n: int = 2,
) -> dict[str, float]:
    """Every drift measure of `states` against `base_states`, on the same hashed features.

    `bandwidth`: the RBF kernel's, fixed by the caller (e.g. `within_bandwidth` of the base
    model's states); then `drift/mmd2` uses it, `drift/bandwidth` reports it and
    `drift/mmd2_median` is the MMD^2 under the per-comparison median heuristic (the kernel that
    moves with `states`). None: `drift/mmd2` uses the per-comparison median."""
    X = featurize(base_states, n=n, dim=dim, seed=seed)  # (m, dim)
    Y = featurize(states, n=n, dim=dim, seed=seed)  # (n, dim)
    X, Y = _check_pair(X, Y, min_rows=2)
    dxx, dyy, dxy = _sq_dists(X, X), _sq_dists(Y, Y), _sq_dists(X, Y)  # (m, m), (n, n), (m, n)
    median = _median_bandwidth(dxx, dyy, dxy)
    fixed = {}
    if bandwidth is not None:
        fixed = {"drift/bandwidth": float(bandwidth), "drift/mmd2_median": _mmd2_of(dxx, dyy, dxy, median)}
    return {
        "drift/mmd2": _mmd2_of(dxx, dyy, dxy, median if bandwidth is None else bandwidth),
        **fixed,
        "drift/centroid": centroid_distance(X, Y),
        "drift/sliced_w1": sliced_wasserstein(X, Y, n_projections=n_projections, seed=seed),
        "drift/jaccard": jaccard(base_states, states, n=jaccard_n),
    }
