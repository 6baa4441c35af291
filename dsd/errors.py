"""The one exception type that means "the user gave bad input".

The CLI turns it into a one-line message and exit code 2; library callers can catch it.
"""


class BadInput(ValueError):
    """Input that cannot be used as given (bad space file, range, run folder, ...)."""
