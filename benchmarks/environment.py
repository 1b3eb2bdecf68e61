"""Process environments of benchmark jobs: a job's variables over the user's."""

from __future__ import annotations

#: Environment variables that hold a list of flags: a job's flags are added
#: to the user's (a later flag wins), not put in their place.
FLAG_LISTS = ("XLA_FLAGS",)


def with_variables(pairs, base):
    """``base`` (a mapping) with the ``(name, value)`` ``pairs`` set, as a new dict.

    A pair replaces ``base``'s value, except for a variable of ``FLAG_LISTS``,
    whose job flags follow the user's own (once: a ``base`` that already ends
    with them is kept, so a process may re-run itself under this environment).
    """
    merged = dict(base)
    for name, value in pairs:
        user = base.get(name, "").strip()
        if name in FLAG_LISTS and user:
            value = user if user.endswith(value) else f"{user} {value}"
        merged[name] = value
    return merged
