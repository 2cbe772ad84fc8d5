"""Queue and AudioQueue from Python threads: delivery, shutdown, timeouts, policies, the GIL."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from speech_to_speech import (
    AudioQueue,
    Queue,
    QueueClosedError,
    QueueConfigError,
    QueueEmptyError,
    QueueError,
    QueueFullError,
    QueueTimeoutError,
    SpeechToSpeechError,
)

POLICIES = ["reject", "drop_newest", "drop_oldest", "block"]


def assert_balanced(q: Queue) -> None:
    assert q.pushed == q.popped + q.dropped + len(q)


def test_exceptions_form_a_tree() -> None:
    assert issubclass(QueueError, SpeechToSpeechError)
    for exc in (
        QueueFullError,
        QueueEmptyError,
        QueueClosedError,
        QueueTimeoutError,
        QueueConfigError,
    ):
        assert issubclass(exc, QueueError)


def test_constructor_is_keyword_only_and_validated() -> None:
    q = Queue(capacity=3)
    assert (q.capacity, q.overflow, len(q), q.closed) == (3, "reject", 0, False)
    assert repr(q) == 'Queue(capacity=3, overflow="reject", len=0, closed=False)'
    with pytest.raises(TypeError):
        Queue(3)  # type: ignore[call-arg]
    with pytest.raises(QueueConfigError):
        Queue(capacity=0)
    with pytest.raises(QueueConfigError, match="unknown overflow policy"):
        Queue(capacity=1, overflow="sometimes")  # type: ignore[arg-type]
    with pytest.raises(OverflowError):
        Queue(capacity=-1)
    for policy in POLICIES:
        assert Queue(capacity=1, overflow=policy).overflow == policy  # type: ignore[arg-type]


def test_none_is_an_ordinary_item() -> None:
    q = Queue(capacity=2)
    assert q.try_push(None)
    assert q.push(None)
    assert q.try_pop() is None
    assert q.pop(timeout=0) is None
    with pytest.raises(QueueEmptyError):
        q.try_pop()


def test_reject_policy() -> None:
    q = Queue(capacity=2, overflow="reject")
    assert q.try_push("a")
    assert q.push("b")
    assert not q.try_push("c")
    with pytest.raises(QueueFullError):
        q.push("d", timeout=1.0)
    assert (q.pushed, q.dropped, len(q)) == (2, 0, 2)
    assert [q.pop(), q.pop()] == ["a", "b"]
    assert_balanced(q)


def test_drop_newest_policy() -> None:
    q = Queue(capacity=2, overflow="drop_newest")
    assert q.push(1) and q.push(2)
    assert not q.try_push(3)
    assert not q.push(4)
    assert (q.pushed, q.dropped, len(q)) == (4, 2, 2)
    assert [q.try_pop(), q.try_pop()] == [1, 2]
    assert_balanced(q)


def test_drop_oldest_policy() -> None:
    q = Queue(capacity=2, overflow="drop_oldest")
    for i in range(5):
        assert q.push(i)
    assert (q.pushed, q.dropped, len(q)) == (5, 3, 2)
    assert [q.pop(), q.pop()] == [3, 4]
    assert_balanced(q)


def test_block_policy_waits_for_room() -> None:
    q = Queue(capacity=1, overflow="block")
    assert q.push("first")
    assert not q.try_push("nope")
    with pytest.raises(QueueTimeoutError):
        q.push("late", timeout=0.05)
    with pytest.raises(QueueTimeoutError):
        q.push("late", timeout=0)
    done = threading.Event()

    def pusher() -> None:
        q.push("second", timeout=10)
        done.set()

    t = threading.Thread(target=pusher)
    t.start()
    assert not done.wait(0.05), "push must wait while the queue is full"
    assert q.pop() == "first"
    t.join(5)
    assert done.is_set()
    assert q.pop() == "second"


def test_dropped_items_are_released() -> None:
    class Item:
        alive = 0

        def __init__(self) -> None:
            Item.alive += 1

        def __del__(self) -> None:
            Item.alive -= 1

    q = Queue(capacity=2, overflow="drop_oldest")
    for _ in range(5):
        q.push(Item())
    assert Item.alive == 2
    q2 = Queue(capacity=1, overflow="drop_newest")
    for _ in range(3):
        q2.push(Item())
    assert Item.alive == 3
    del q, q2
    assert Item.alive == 0


def test_timeouts_are_honoured() -> None:
    q = Queue(capacity=1)
    t0 = time.perf_counter()
    with pytest.raises(QueueTimeoutError):
        q.pop(timeout=0.1)
    took = time.perf_counter() - t0
    assert 0.1 <= took < 2.0
    with pytest.raises(QueueTimeoutError):
        q.pop(timeout=0)
    with pytest.raises(ValueError):
        q.pop(timeout=-1)
    with pytest.raises(ValueError):
        q.pop(timeout=float("nan"))


def test_close_drains_then_raises() -> None:
    q = Queue(capacity=4)
    q.push("a")
    assert q.close()
    assert not q.close()
    assert q.closed
    with pytest.raises(QueueClosedError):
        q.push("b")
    with pytest.raises(QueueClosedError):
        q.try_push("b")
    assert q.pop() == "a"
    with pytest.raises(QueueClosedError):
        q.pop()
    with pytest.raises(QueueClosedError):
        q.try_pop()


def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for `condition` (a state the test needs, not an amount of time)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.001)


def test_close_wakes_every_blocked_thread() -> None:
    empty = Queue(capacity=1)
    full = Queue(capacity=1, overflow="block")
    full.push(0)
    errors: list[type[BaseException]] = []
    lock = threading.Lock()

    def run(fn: object) -> None:
        try:
            fn()  # type: ignore[operator]
        except QueueError as e:
            with lock:
                errors.append(type(e))

    threads = [threading.Thread(target=run, args=(empty.pop,)) for _ in range(3)]
    threads += [threading.Thread(target=run, args=(lambda: full.push(1),)) for _ in range(2)]
    for t in threads:
        t.start()
    _until(lambda: empty.waiting == 3 and full.waiting == 2)
    assert not errors
    t0 = time.perf_counter()
    empty.close()
    full.close()
    for t in threads:
        t.join(2)
        assert not t.is_alive()
    assert time.perf_counter() - t0 < 2.0
    assert errors == [QueueClosedError] * 5


@pytest.mark.parametrize("policy", ["block", "reject"])
def test_many_producers_and_consumers(policy: str) -> None:
    producers, consumers, per = 4, 4, 5_000
    q = Queue(capacity=16, overflow=policy)  # type: ignore[arg-type]
    received: list[list[int]] = [[] for _ in range(consumers)]

    def produce(p: int) -> None:
        for i in range(p * per, (p + 1) * per):
            if policy == "block":
                q.push(i, timeout=10)
            else:
                while not q.try_push(i):
                    time.sleep(0)

    def consume(c: int) -> None:
        out = received[c]
        while True:
            try:
                out.append(q.pop(timeout=10))
            except QueueClosedError:
                return

    cs = [threading.Thread(target=consume, args=(c,)) for c in range(consumers)]
    ps = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    for t in cs + ps:
        t.start()
    for t in ps:
        t.join()
    q.close()
    for t in cs:
        t.join()
    everything = [x for r in received for x in r]
    n = producers * per
    assert len(everything) == n
    assert sorted(everything) == list(range(n))
    assert (q.pushed, q.popped, q.dropped, len(q)) == (n, n, 0, 0)


def test_pop_releases_the_gil() -> None:
    q = Queue(capacity=1)
    count = 0
    stop = threading.Event()

    def spin() -> None:
        nonlocal count
        while not stop.is_set():
            count += 1

    def blocked_pop() -> None:
        with contextlib.suppress(QueueClosedError):
            q.pop(timeout=30)

    popper = threading.Thread(target=blocked_pop)
    popper.start()
    _until(lambda: q.waiting == 1)
    spinner = threading.Thread(target=spin)
    spinner.start()
    # While the popper is blocked, this thread and the spinner both run.
    _until(lambda: count > 1000)
    assert popper.is_alive() and q.waiting == 1
    stop.set()
    spinner.join()
    q.close()
    popper.join(10)
    assert not popper.is_alive()


def test_blocked_pop_does_not_burn_cpu() -> None:
    q = Queue(capacity=1)
    cpu: list[float] = []

    def blocked_pop() -> None:
        start = time.thread_time()
        with pytest.raises(QueueTimeoutError):
            q.pop(timeout=0.3)
        cpu.append(time.thread_time() - start)

    t = threading.Thread(target=blocked_pop)
    t.start()
    t.join()
    assert cpu[0] < 0.05, f"a blocked pop used {cpu[0]:.3f}s of CPU in 0.3s"


# --- AudioQueue ---


def test_audio_queue_round_trips_samples_in_order() -> None:
    q = AudioQueue(capacity=1000)
    assert (q.capacity, q.overflow, len(q), q.closed) == (1000, "drop_newest", 0, False)
    total = 48_000
    src = np.arange(total, dtype=np.float32)
    got: list[npt.NDArray[np.float32]] = []

    def consume() -> None:
        while True:
            try:
                got.append(q.pop(256, timeout=10))
            except QueueClosedError:
                return

    t = threading.Thread(target=consume)
    t.start()
    for frame in np.split(src, total // 480):
        off = 0
        while off < frame.size:
            off += q.push(frame[off:])
            if off < frame.size:
                time.sleep(0.0005)
    q.close()
    t.join(10)
    out = np.concatenate(got)
    np.testing.assert_array_equal(out, src)
    assert q.popped == total
    # drop_newest counted what did not fit; the retries pushed it again.
    assert q.pushed == q.popped + q.dropped + len(q)


def test_audio_queue_policies() -> None:
    q = AudioQueue(capacity=4, overflow="reject")
    assert q.push(np.ones(6, dtype=np.float32)) == 4
    assert (q.pushed, q.dropped, len(q)) == (4, 0, 4)
    assert q.skip(3) == 3
    np.testing.assert_array_equal(q.try_pop(8), np.ones(1, dtype=np.float32))
    assert q.try_pop(8).size == 0
    assert (q.pushed, q.popped, q.dropped) == (4, 1, 3)

    q = AudioQueue(capacity=4, overflow="drop_newest")
    assert q.push(np.arange(6, dtype=np.float32)) == 4
    assert (q.pushed, q.dropped, len(q)) == (6, 2, 4)

    q = AudioQueue(capacity=4, overflow="block")
    t0 = time.perf_counter()
    assert q.push(np.zeros(6, dtype=np.float32), timeout=0.05) == 4
    assert time.perf_counter() - t0 >= 0.05
    with pytest.raises(QueueTimeoutError):
        AudioQueue(capacity=4).pop(4, timeout=0.01)
    with pytest.raises(QueueConfigError):
        AudioQueue(capacity=4, overflow="drop_oldest")  # type: ignore[arg-type]
    with pytest.raises(QueueConfigError):
        AudioQueue(capacity=0)


def test_audio_queue_block_push_waits_for_the_consumer() -> None:
    q = AudioQueue(capacity=64, overflow="block")
    src = np.arange(10_000, dtype=np.float32)
    got: list[npt.NDArray[np.float32]] = []

    def consume() -> None:
        with contextlib.suppress(QueueClosedError):
            while True:
                got.append(q.pop(50, timeout=10))

    t = threading.Thread(target=consume)
    t.start()
    assert q.push(src, timeout=10) == src.size
    q.close()
    t.join(10)
    with pytest.raises(QueueClosedError):
        q.push(src)
    np.testing.assert_array_equal(np.concatenate(got), src)
    assert (q.pushed, q.popped, q.dropped) == (src.size, src.size, 0)


def test_audio_queue_close_wakes_a_blocked_pop() -> None:
    q = AudioQueue(capacity=8)
    raised: list[type[BaseException]] = []

    def pop() -> None:
        try:
            q.pop(4)
        except QueueError as e:
            raised.append(type(e))

    t = threading.Thread(target=pop)
    t.start()
    _until(lambda: q.waiting == 1)
    q.close()
    t.join(2)
    assert raised == [QueueClosedError]
