"""The one exception type that command-line entry points turn into a one-line error."""


class NeuroselError(Exception):
    """A user-facing error: the message names the file, line or utterance and the problem."""
