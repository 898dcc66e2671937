"""The one error type for user-facing problems.

Every message names the bad value, the valid choices and, where there is one, the fix. The CLI turns
a MaxactError into a single line on stderr and a non-zero exit; library callers can catch it.
"""


class MaxactError(Exception):
    """A problem with the user's input or environment that the user can fix."""


def choices_text(choices, limit: int = 12) -> str:
    """Render a list of valid choices for an error message, shortened when long."""
    items = [str(c) for c in choices]
    if len(items) > limit:
        return ", ".join(items[:limit]) + f", ... ({len(items)} in all)"
    return ", ".join(items)
