"""The one exception type users see: a problem they can fix, stated in one line."""


class CliprankError(Exception):
    """Bad input or an unusable environment. The CLI prints the message alone and exits with 2.

    The message names what is wrong and how to fix it; no traceback is shown for these.
    """
