"""The base of every error a user can fix: a bad file, flag, setting or input.

Commands print such an error as one line and exit with status 2; anything else is a bug.
"""
import sys


class UserError(Exception):
    """A mistake in the user's input or set-up, with a message naming the file, flag or field."""


def print_warning(message: str) -> None:
    """Tell the user, in one line on standard error, about input that was used in part (the
    default ``warn`` of the functions that take one)."""
    print(message, file=sys.stderr, flush=True)
