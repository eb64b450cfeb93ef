"""User-facing errors: printed as one line by the dispatcher, never as a traceback."""


class UserError(RuntimeError):
    """Bad input that the user can fix (wrong path, unknown name, missing GPU...).

    The message must be one line and name the fix.
    """
