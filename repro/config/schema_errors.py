"""One-line messages from pydantic validation errors: the key path, the file, what is valid."""

from __future__ import annotations

from pydantic import ValidationError


def key_path(loc: tuple[int | str, ...], prefix: str = "") -> str:
    """('claims', 3, 'metric') -> 'claims[3].metric' (with an optional dotted prefix)."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def first_error(exc: ValidationError | dict, prefix: str = "") -> tuple[str, str]:
    """(key path, message) of the first error pydantic reports (or of one error dict)."""
    err = exc.errors(include_url=False)[0] if isinstance(exc, ValidationError) else exc
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    path = key_path(loc, prefix)
    if err["type"] == "extra_forbidden":
        return path, "unknown key"
    if err["type"] == "missing":
        return path, "missing"
    return path, f"{err['msg'][0].lower()}{err['msg'][1:]}, got {err.get('input')!r}"
