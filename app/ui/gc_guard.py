"""Python's cyclic garbage collector runs on the GUI thread only, while Qt is up.

CPython runs a collection in whichever thread happens to cross the allocation threshold. When that is a worker
thread (a download, a library scan, the engine's owner thread) and the garbage holds a Qt object (a closed
widget in a reference cycle with its own slots), PySide deletes the C++ object from the wrong thread and the
process dies with a segmentation fault; the crash's stack shows "Garbage-collecting" inside a worker's job.
So, as PyQt/PySide applications commonly do, automatic collection is switched off and a timer on the GUI thread
does the same work on the same thresholds. Objects outside cycles are still freed at once by reference counting;
only cyclic garbage waits, for at most one tick.

The engine, which frees a model on its owner thread, asks for a full collection through its `collect_cycles`
hook; while the guard is on, that hook sets a flag and the next tick collects everything on the GUI thread.
"""

from __future__ import annotations

import gc
import threading

from PySide6.QtCore import QCoreApplication, QObject, QTimer, Slot

from app.core.chat import engine

TICK_MS = 500

_lock = threading.Lock()
_guard: GuiThreadCollector | None = None


class GuiThreadCollector(QObject):
    """Owns automatic garbage collection while it lives; parented to the application."""

    def __init__(self, app: QCoreApplication, tick_ms: int = TICK_MS) -> None:
        super().__init__(app)
        self.thresholds = gc.get_threshold()
        self.collections = [0, 0, 0]
        self._promoted = 0  # objects moved into the oldest generation since the last full collection
        self._long_lived = len(gc.get_objects(2))
        self._wanted = threading.Event()
        self.timer = QTimer(self)
        self.timer.setInterval(tick_ms)
        self.timer.timeout.connect(self.tick)
        engine.collect_cycles = self.want
        gc.disable()
        self.timer.start()
        # The last collection on the GUI thread; automatic collection stays off while worker threads wind down.
        app.aboutToQuit.connect(lambda: self.collect(2))

    @Slot()
    def tick(self) -> None:
        """One tick: the young generation whenever anything was allocated, older ones as CPython decides.

        CPython collects generation 0 when its count passes the threshold at an allocation; a tick samples
        instead, so it collects the young generation on every tick that saw allocations (tens of microseconds)
        and so catches a spike that came and went between ticks. Generation 1 follows every `t1` young
        collections, and a full collection needs CPython's own condition: `t2` collections of generation 1
        and objects promoted since the last full one worth a quarter of the long-lived ones (a full
        collection of this app's heap takes tens of milliseconds on the GUI thread).
        """
        if self._wanted.is_set():
            self._wanted.clear()
            self.collect(2)
            return
        count0, count1, count2 = gc.get_count()
        _t0, t1, t2 = self.thresholds
        if count0 <= 0:
            return
        if count1 + 1 <= t1:
            self.collect(0)
        elif count2 + 1 > t2 and self._promoted > self._long_lived / 4:
            self.collect(2)
        else:
            self._promoted += len(gc.get_objects(1))  # at most these survive into the oldest generation
            self.collect(1)

    def collect(self, generation: int = 2) -> int:
        self.collections[generation] += 1
        found = gc.collect(generation)
        if generation == 2:
            self._promoted = 0
            self._long_lived = len(gc.get_objects(2))
        return found

    def want(self) -> None:
        """Collect everything on the next tick (any thread)."""
        self._wanted.set()


def install(app: QCoreApplication | None = None) -> GuiThreadCollector:
    """Start the guard for `app` (the running application by default); a second call returns the first guard.

    Call it on the GUI thread.
    """
    global _guard
    app = app or QCoreApplication.instance()
    if app is None:
        raise RuntimeError("the garbage-collection guard needs a running QApplication")
    with _lock:
        if _guard is None:
            _guard = GuiThreadCollector(app)
        return _guard


def installed() -> GuiThreadCollector | None:
    return _guard

