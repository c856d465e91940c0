"""The base of every error a user can fix: a bad file, flag, setting or input.

Commands print such an error as one line and exit with status 2; anything else is a bug.
"""


class UserError(Exception):
    """A mistake in the user's input or set-up, with a message naming the file, flag or field."""
