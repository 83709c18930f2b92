"""Threads: the GIL is released while the engine computes, a run can be
cancelled from another thread, and calls run concurrently."""
import threading
import time

import numpy as np
import pytest

import diffuse
from conftest import PROMPT


def test_gil_is_released_during_generation(pipe):
    # A pure-Python counter thread runs while the main thread generates; with
    # the GIL held by the engine it would get no time at all between steps.
    counts = []
    stop = threading.Event()

    def count():
        n = 0
        while not stop.is_set():
            n += 1
        counts.append(n)

    pipe(PROMPT, num_inference_steps=2, generator=1)  # warm-up (first-call costs)
    t = threading.Thread(target=count)
    t0 = time.perf_counter()
    t.start()
    out = pipe(PROMPT, num_inference_steps=8, generator=1, output_type="uint8")
    elapsed = time.perf_counter() - t0
    stop.set()
    t.join()
    assert len(out.images) == 1
    # Calibrate: how far the counter gets alone in a tenth of the time.
    stop2 = threading.Event()
    solo = []

    def count_solo():
        n = 0
        while not stop2.is_set():
            n += 1
        solo.append(n)

    t2 = threading.Thread(target=count_solo)
    t2.start()
    time.sleep(elapsed / 10)
    stop2.set()
    t2.join()
    # The counter kept running for most of the generation: at least as far as
    # it gets alone in a tenth of that time (a held GIL allows only the gaps
    # between steps, orders of magnitude less).
    assert counts[0] > solo[0], (counts, solo, elapsed)


def test_cancel_from_another_thread(pipe):
    token = diffuse.CancelToken()
    steps = []

    def cb(step, total, latents):
        steps.append(step)
        if step == 2:
            threading.Thread(target=token.cancel).start()
            time.sleep(0.2)  # the other thread cancels while this step's callback waits

    t0 = time.perf_counter()
    with pytest.raises(diffuse.CancelledError):
        pipe(PROMPT, num_inference_steps=200, generator=1, callback_on_step_end=cb, cancel=token)
    assert token.cancelled
    assert steps[-1] in (2, 3) and len(steps) <= 3  # stopped at the next step boundary
    assert time.perf_counter() - t0 < 30


def test_interrupt_from_a_timer_thread(pipe):
    started = threading.Event()
    result = {}

    def run():
        try:
            pipe(PROMPT, num_inference_steps=1000, generator=1,
                 callback_on_step_end=lambda s, t, l: started.set())
            result["done"] = True
        except diffuse.CancelledError as e:
            result["cancelled"] = str(e)

    t = threading.Thread(target=run)
    t.start()
    assert started.wait(60)
    pipe.interrupt()
    t.join(60)
    assert not t.is_alive() and "cancelled" in result, result


def test_concurrent_calls_from_threads_match_serial_ones(pipe):
    seeds = [101, 102, 103]
    serial = {s: pipe(PROMPT, num_inference_steps=3, generator=s, output_type="uint8").images[0] for s in seeds}
    got = {}

    def run(s):
        got[s] = pipe(PROMPT, num_inference_steps=3, generator=s, output_type="uint8").images[0]

    threads = [threading.Thread(target=run, args=(s,)) for s in seeds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in seeds:
        assert np.array_equal(got[s], serial[s]), s
