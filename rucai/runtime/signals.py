"""Stop-signals deferred to a safe point, so a job can checkpoint before it goes.

SLURM signals a job `slurm.signal_delay_s` before its time limit (submitit asks for SIGUSR2) and
pre-emption sends SIGTERM. Both arrive in the middle of a step; saving there is unsafe. A loop
wraps itself in `PendingSignals`, checks `pending` at each step boundary, saves its checkpoint,
then calls `forward()`: the handler installed before (submitit requeues the job, Lightning stops
on SIGTERM) gets the signal as if it had just arrived; where none was installed the process exits
with 128 + signum through SystemExit, so the run record still says `interrupted`.

    with PendingSignals() as sig:
        for step in ...:
            ...
            if sig.pending:
                save_checkpoint(...)
                sig.forward()
"""

from __future__ import annotations

import signal
import threading
from typing import Any

DEFAULT_SIGNALS = ("SIGUSR2", "SIGTERM")


class PendingSignals:
    def __init__(self, signals: tuple[str, ...] = DEFAULT_SIGNALS) -> None:
        self.signals = signals
        self.pending: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        self.pending = signum

    def install(self) -> PendingSignals:
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers can only be set from the main thread
        for name in self.signals:
            sig = getattr(signal, name, None)
            if sig is not None and sig not in self._previous:
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handler)
        return self

    def restore(self) -> None:
        for sig, prev in self._previous.items():
            if prev is not None:
                signal.signal(sig, prev)
        self._previous = {}

    def forward(self) -> None:
        """Restore the previous handlers and deliver the pending signal to them."""
        signum, self.pending = self.pending, None
        prev = self._previous.get(signum) if signum is not None else None
        self.restore()
        if signum is None:
            return
        if callable(prev):
            prev(signum, None)
        elif prev in (signal.SIG_DFL, None):
            # the default action would end the process unrecorded: exit through Python instead, so the
            # dispatcher writes the run record (status: interrupted) on the way out
            raise SystemExit(128 + signum)

    def __enter__(self) -> PendingSignals:
        return self.install()

    def __exit__(self, *exc: Any) -> None:
        self.restore()
