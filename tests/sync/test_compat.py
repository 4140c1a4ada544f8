"""redkit._sync._compat: the threading twins the generated code runs on (hand-written)."""

from __future__ import annotations

import threading

from redkit._sync import _compat


def test_a_due_timer_runs_on_the_timer_thread_and_a_cancelled_one_never_runs() -> None:
    loop = _compat.get_running_loop()
    ran: list[str] = []
    done = threading.Event()

    def record(name: str) -> None:
        ran.append(f"{name}@{threading.current_thread().name}")
        if name == "last":
            done.set()

    loop.call_later(0.05, lambda: record("first"))
    loop.call_later(0.06, lambda: record("cancelled")).cancel()
    loop.call_later(0.1, lambda: record("last"))
    assert done.wait(5)
    assert ran == ["first@redkit-timers", "last@redkit-timers"]


def test_cancelled_timers_do_not_pile_up() -> None:
    loop = _compat.get_running_loop()
    for _ in range(5000):  # leases released long before their first renewal is due
        loop.call_later(3600, lambda: None).cancel()
    live = [loop.call_later(3600, lambda: None) for _ in range(10)]
    assert len(loop._heap) < 200
    for handle in live:
        handle.cancel()


def test_gather_threads_runs_the_calls_at_once_and_keeps_their_order() -> None:
    inside = threading.Barrier(8, timeout=5)  # only met if all eight run at the same time

    def call(i: int) -> int:
        inside.wait()
        return i * i

    assert _compat.gather_threads(call, range(8)) == [i * i for i in range(8)]
