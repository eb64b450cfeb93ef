"""User-facing errors: printed as one line by the dispatcher, never as a traceback."""


class UserError(RuntimeError):
    """Bad input that the user can fix (wrong path, unknown name, missing GPU...).

    The message must be one line and name the fix.
    """


def check_min(settings, prefix: str, **minimum: float) -> None:
    """One UserError line for the first setting below its minimum, before any work starts:
    `check_min(cfg.method.search, "method.search", beams=1, depth=0)`."""
    for key, low in minimum.items():
        value = settings[key]
        if not isinstance(value, (int, float)) or value < low:
            raise UserError(f"{prefix}.{key}={value!r} must be a number >= {low}")
