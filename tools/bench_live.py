#!/usr/bin/env python3
"""Latency of `diffuse serve` as the playground's live mode sees it (issue 23).

Python standard library only. For each request it measures the time from
sending the request to holding the image's PNG bytes, the path the page takes:

  native (default)  POST /api/jobs, then the job's Server-Sent Events
                    (GET /api/jobs/{id}/events) until `done`, then GET the PNG
                    (/images/<file>): what web/live.js does.
  a1111             POST /sdapi/v1/txt2img, which answers with the PNG in base64.

Two phases:
  latency    one request at a time (the worker idle when each arrives):
             p50 / p99 / mean / min / max of request-to-PNG, and the server's
             own phase times (loading, encode + steps, decoding, saving) from
             the job's phase log (native only).
  sustained  --clients requests kept in flight for --duration seconds (the
             worker always has the next job queued): images per second.

Each request changes the prompt (a counter appended) and the seed, as typing
does, so no cache can answer it.

  diffuse serve --random-model sd21 --no-demo --port 7860 &
  python3 tools/bench_live.py --model random-sd21 --size 512 --steps 1 --cfg-scale 0

Prints a table, and with --json FILE writes every number (and each latency).
Exit status: 0, or 1 when a request failed (its message is printed).
"""
import argparse
import base64
import http.client
import json
import statistics
import sys
import threading
import time
import urllib.parse

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Client:
    def __init__(self, url, timeout):
        u = urllib.parse.urlsplit(url)
        if u.scheme != "http":
            raise SystemExit(f"bench_live: only http:// URLs are supported, not {url!r}")
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 80
        self.timeout = timeout
        self.conn = None

    def _connect(self):
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def request(self, method, path, body=None):
        """One request on the kept-alive connection; returns (status, bytes)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in range(2):
            if self.conn is None:
                self.conn = self._connect()
            try:
                self.conn.request(method, path, body=data, headers=headers)
                res = self.conn.getresponse()
                return res.status, res.read()
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = None
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")

    def json(self, method, path, body=None):
        status, data = self.request(method, path, body)
        if status >= 300:
            raise RuntimeError(f"{method} {path}: HTTP {status}: {data[:300].decode(errors='replace')}")
        return json.loads(data)

    def wait_done(self, job_id):
        """Reads the job's event stream until it ends; returns the last job state."""
        conn = self._connect()
        try:
            conn.request("GET", f"/api/jobs/{job_id}/events")
            res = conn.getresponse()
            if res.status != 200:
                raise RuntimeError(f"events of {job_id}: HTTP {res.status}: {res.read()[:300]!r}")
            event, last = None, None
            while True:
                line = res.readline()
                if not line:
                    raise RuntimeError(f"events of {job_id}: the stream ended before the job did")
                line = line.decode().rstrip("\r\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    if event == "state":
                        last = data
                    elif event == "done":
                        return data
                    elif event == "error":
                        raise RuntimeError(f"job {job_id} ended {data.get('state')}: {data.get('error')}")
        finally:
            conn.close()


def one_native(client, args, i):
    body = {"prompt": f"{args.prompt} {i}", "seed": args.seed + i, "steps": args.steps, "cfg_scale": args.cfg_scale,
            "width": args.width, "height": args.height, "images": 1}
    if args.model:
        body["model"] = args.model
    if args.sampler:
        body["sampler"] = args.sampler
    t0 = time.perf_counter()
    job = client.json("POST", "/api/jobs", body)
    done = client.wait_done(job["id"])
    status, png = client.request("GET", done["images"][0]["url"])
    t1 = time.perf_counter()
    if status != 200 or not png.startswith(PNG_SIGNATURE):
        raise RuntimeError(f"GET {done['images'][0]['url']}: HTTP {status}, not a PNG")
    # Phase log: [{phase, at_s}] from the job's start; a phase lasts until the next one starts.
    phases = {}
    log = done.get("phases", [])
    for k, p in enumerate(log):
        end = log[k + 1]["at_s"] if k + 1 < len(log) else done.get("elapsed_s", p["at_s"])
        phases[p["phase"]] = phases.get(p["phase"], 0.0) + max(0.0, end - p["at_s"])
    return t1 - t0, phases, len(png)


def one_a1111(client, args, i):
    body = {"prompt": f"{args.prompt} {i}", "seed": args.seed + i, "steps": args.steps, "cfg_scale": args.cfg_scale,
            "width": args.width, "height": args.height, "batch_size": 1}
    if args.model:
        body["override_settings"] = {"sd_model_checkpoint": args.model}
    if args.sampler:
        body["sampler_name"] = args.sampler
    t0 = time.perf_counter()
    out = client.json("POST", "/sdapi/v1/txt2img", body)
    png = base64.b64decode(out["images"][0])
    t1 = time.perf_counter()
    if not png.startswith(PNG_SIGNATURE):
        raise RuntimeError("/sdapi/v1/txt2img: the image is not a PNG")
    return t1 - t0, {}, len(png)


def percentile(values, q):
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    s = sorted(values)
    k = max(1, -(-len(s) * q // 100))  # ceil(n q / 100), at least 1
    return s[int(k) - 1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--url", default="http://127.0.0.1:7860", help="the server (default %(default)s)")
    ap.add_argument("--model", default="", help="model id (default: the server's current one)")
    ap.add_argument("--api", choices=["native", "a1111"], default="native")
    ap.add_argument("--prompt", default="a photo of a cat wearing a hat")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--cfg-scale", type=float, default=0.0, help="0 or 1: no CFG (one UNet call per step)")
    ap.add_argument("--sampler", default="")
    ap.add_argument("--size", type=int, default=512, help="width and height (default %(default)s)")
    ap.add_argument("--warmup", type=int, default=2, help="requests before measuring (model load, caches)")
    ap.add_argument("--requests", type=int, default=20, help="one-at-a-time requests measured (default %(default)s)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of the sustained phase; 0: skip it")
    ap.add_argument("--clients", type=int, default=2, help="requests in flight in the sustained phase")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds a request may take")
    ap.add_argument("--label", default="", help="a name for this run in the table and the JSON")
    ap.add_argument("--json", default="", help="write the results to this file")
    args = ap.parse_args()
    args.width = args.height = args.size
    if args.steps < 1 or args.requests < 1 or args.clients < 1:
        ap.error("--steps, --requests and --clients must be at least 1")
    one = one_native if args.api == "native" else one_a1111

    client = Client(args.url, args.timeout)
    counter = [0]
    lock = threading.Lock()

    def next_index():
        with lock:
            counter[0] += 1
            return counter[0]

    try:
        for _ in range(args.warmup):
            one(client, args, next_index())
        lat, phase_runs, png_bytes = [], [], []
        for _ in range(args.requests):
            t, ph, n = one(client, args, next_index())
            lat.append(t)
            phase_runs.append(ph)
            png_bytes.append(n)
    except (RuntimeError, OSError, KeyError, ValueError) as e:
        print(f"bench_live: {e}", file=sys.stderr)
        return 1

    sustained = None
    if args.duration > 0:
        done, errors = [], []
        stop_at = time.perf_counter() + args.duration

        def worker():
            c = Client(args.url, args.timeout)
            while time.perf_counter() < stop_at and not errors:
                try:
                    one(c, args, next_index())
                except (RuntimeError, OSError, KeyError, ValueError) as e:
                    errors.append(str(e))
                    return
                with lock:
                    done.append(time.perf_counter())

        t0 = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(args.clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        elapsed = time.perf_counter() - t0
        if errors:
            print(f"bench_live: {errors[0]}", file=sys.stderr)
            return 1
        sustained = {"images": len(done), "seconds": elapsed, "images_per_s": len(done) / elapsed,
                     "clients": args.clients}

    ms = [1000 * t for t in lat]
    # The job's phase log enters "denoising" when the first step has ended (the
    # step callback), so the first step counts in "encoding": report the two together.
    phases = {}
    for name, parts in [("loading", ["loading"]), ("encode + steps", ["encoding", "denoising"]),
                        ("decoding", ["decoding"]), ("saving", ["saving"])]:
        vals = [1000 * sum(p.get(k, 0.0) for k in parts) for p in phase_runs if any(k in p for k in parts)]
        if vals:
            phases[name] = statistics.median(vals)
    result = {
        "label": args.label, "api": args.api, "url": args.url, "model": args.model, "width": args.width,
        "height": args.height, "steps": args.steps, "cfg_scale": args.cfg_scale, "requests": len(ms),
        "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99), "mean_ms": statistics.mean(ms),
        "min_ms": min(ms), "max_ms": max(ms), "server_phase_median_ms": phases,
        "png_bytes_median": statistics.median(png_bytes), "latencies_ms": ms, "sustained": sustained,
    }
    name = args.label or f"{args.model or 'current model'} {args.width}x{args.height}"
    print(f"{name}: {args.steps} step(s), cfg {args.cfg_scale:g}, {args.api} API, {len(ms)} requests one at a time")
    print(f"  request -> PNG  p50 {result['p50_ms']:.1f} ms  p99 {result['p99_ms']:.1f} ms  "
          f"mean {result['mean_ms']:.1f}  min {result['min_ms']:.1f}  max {result['max_ms']:.1f}")
    if phases:
        print("  server phases (median ms): " + ", ".join(f"{k} {v:.1f}" for k, v in phases.items()))
    if sustained:
        print(f"  sustained: {sustained['images_per_s']:.2f} images/s ({sustained['images']} in "
              f"{sustained['seconds']:.1f} s, {args.clients} requests in flight)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
