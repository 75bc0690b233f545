"""The lab's one error type: a command or set-up step on the lab machine failed."""


class LabError(Exception):
    """A lab command failed; the message names the command and carries its stderr."""
