"""Cyclic garbage is collected on the GUI thread only while Qt is up (app/ui/gc_guard.py).

The crash this guards against: a worker thread's automatic collection freed a closed widget's reference cycle
and PySide deleted the C++ widget from that thread (CI died with "Garbage-collecting" in a library scan job).
"""

from __future__ import annotations

import gc
import threading
import weakref
from typing import ClassVar

from PySide6.QtWidgets import QLabel

from app.core.chat import engine
from app.ui import gc_guard
from app.ui.main_window import build_app
from app.ui.workers import run_job


class Tracer:
    """Records the thread it was freed on."""

    freed_on: ClassVar[list[str]] = []

    def __init__(self) -> None:
        self.me = self  # a cycle: only the cyclic collector can free it

    def __del__(self) -> None:
        Tracer.freed_on.append(threading.current_thread().name)


def widget_in_a_cycle() -> weakref.ref:
    label = QLabel("closed and forgotten")
    tracer = Tracer()
    label.tracer = tracer  # type: ignore[attr-defined]
    tracer.label = label  # type: ignore[attr-defined]
    return weakref.ref(tracer)


def test_the_app_runs_with_the_guard_and_the_engine_asks_it_to_collect(qapp) -> None:
    app = build_app()
    guard = gc_guard.installed()
    assert guard is not None and guard is gc_guard.install(app)  # one guard, whoever installs it
    assert not gc.isenabled()
    assert engine.collect_cycles == guard.want


def test_a_worker_threads_allocations_never_collect_a_widget_there(qtbot) -> None:
    Tracer.freed_on.clear()
    ref = widget_in_a_cycle()
    assert ref() is not None  # still there: nothing but the cyclic collector can free it

    def allocate() -> int:
        # Far past every generation's threshold: CPython would collect on this thread here.
        junk = [[i] for i in range(200_000)]
        return len(junk)

    job = run_job(allocate)
    qtbot.waitUntil(lambda: job.done.is_set(), timeout=20_000)
    qtbot.waitUntil(lambda: ref() is None, timeout=10_000)  # the GUI thread's tick collected it
    assert Tracer.freed_on == [threading.main_thread().name]


def test_an_engine_request_collects_everything_on_the_next_tick(qtbot) -> None:
    guard = gc_guard.installed()
    assert guard is not None
    gc.collect()
    Tracer.freed_on.clear()
    ref = widget_in_a_cycle()
    held = [ref()]
    gc.collect(0)
    gc.collect(1)  # now in the oldest generation, as a long-loaded model's objects are
    held.clear()
    assert ref() is not None
    done = threading.Event()
    before = guard.collections[2]

    def unload_like_the_engine() -> None:
        engine.collect_cycles()  # what Engine.unload calls on its owner thread
        done.set()

    thread = threading.Thread(target=unload_like_the_engine, name="owner")
    thread.start()
    thread.join(10)
    assert done.is_set()
    assert ref() is not None  # not on the owner thread...
    qtbot.waitUntil(lambda: ref() is None, timeout=5_000)  # ...but on the GUI thread, within a tick
    assert guard.collections[2] > before
    assert Tracer.freed_on == [threading.main_thread().name]
