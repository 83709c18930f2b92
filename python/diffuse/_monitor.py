"""Telemetry while generating: GPU utilisation and memory (NVML), CPU and RAM
(/proc), as `diffuse monitor` prints them."""
import threading
import time

from . import _diffuse


def monitor(interval=1.0, count=None, nvml_library="libnvidia-ml.so.1"):
    """Yields a telemetry sample every ``interval`` seconds (``count`` of them,
    or forever), like ``diffuse monitor`` / ``xpu-smi dump``.

    Each sample is a dict: ``timestamp`` (seconds since the epoch), ``cpu``
    (cpu_util %, ram_used, ram_total, process_rss in bytes) and ``gpus`` (one
    dict per NVIDIA GPU: index, name, gpu_util %, mem_util %, mem_used,
    mem_total in bytes, power_w, power_limit_w, temperature_c, sm_clock_mhz;
    empty without NVML). The first sample comes after one interval (CPU
    utilisation is measured over it).
    """
    if not interval > 0:
        raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
    telemetry = _diffuse.Telemetry(nvml_library)
    n = 0
    while count is None or n < count:
        time.sleep(interval)
        yield {"timestamp": time.time(), "cpu": telemetry.sample_cpu(), "gpus": telemetry.sample_gpus()}
        n += 1


class Monitor:
    """Collects :func:`monitor` samples in a background thread while a block
    runs (the engine releases the GIL, so the thread keeps sampling)::

        with diffuse.Monitor(interval=0.2) as mon:
            pipe("a castle")
        print(mon.summary())
    """

    def __init__(self, interval=0.5, nvml_library="libnvidia-ml.so.1"):
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        self.interval = interval
        self.samples = []
        self._telemetry = _diffuse.Telemetry(nvml_library)
        self._stop = threading.Event()
        self._thread = None

    @property
    def gpu_available(self):
        """True when NVML answered (an NVIDIA GPU and driver are present)."""
        return self._telemetry.gpu_available

    def _sample(self):
        self.samples.append({"timestamp": time.time(), "cpu": self._telemetry.sample_cpu(),
                             "gpus": self._telemetry.sample_gpus()})

    def _run(self):
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self):
        self._telemetry.sample_cpu()  # starts the CPU utilisation window
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="diffuse-monitor", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()  # at least one sample, covering the end of the block
        return False

    def summary(self):
        """Peaks over the samples: {"samples", "cpu_util_max", "rss_max",
        "gpus": [{"index", "name", "gpu_util_max", "mem_used_max", "mem_total"}]}."""
        gpus = {}
        for s in self.samples:
            for g in s["gpus"]:
                k = gpus.setdefault(g["index"], {"index": g["index"], "name": g["name"], "gpu_util_max": 0.0,
                                                 "mem_used_max": 0, "mem_total": g["mem_total"]})
                k["gpu_util_max"] = max(k["gpu_util_max"], g["gpu_util"])
                k["mem_used_max"] = max(k["mem_used_max"], g["mem_used"])
        return {
            "samples": len(self.samples),
            "cpu_util_max": max((s["cpu"]["cpu_util"] for s in self.samples), default=0.0),
            "rss_max": max((s["cpu"]["process_rss"] for s in self.samples), default=0),
            "gpus": [gpus[i] for i in sorted(gpus)],
        }
