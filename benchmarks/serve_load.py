"""Load and abuse of `usss-tf serve`: concurrent clients mixing good and hostile requests; JSON out.

    python benchmarks/serve_load.py --export saved_models/usss/1 --clients 6 --requests 1 --mix bomb
    python benchmarks/serve_load.py --clients 16 --requests 50 --mix good,bomb,wrong_dtype,unknown_signature,not_an_image

The server runs as its own process (`usss-tf serve` on free loopback ports),
so its memory is measured apart from the clients': resident set size before
the load, the peak (sampled every 10 ms, and the kernel's high-water mark
VmHWM), and after. Each of ``--clients`` threads (own gRPC channel) sends
``--requests`` Predict requests, cycling through the ``--mix`` kinds:

* ``good``: PNG bytes of a rendered synth_city scene (``--size``), the bytes
  signature, ``output_filter: ["class_ids"]``: expects OK;
* ``bomb``: a 35 KB PNG / JPEG (baseline, progressive) declaring 6000x6000
  pixels (108 MB once decoded): expects INVALID_ARGUMENT from the export's
  header check, before any decoding;
* ``wrong_dtype``: a uint8 tensor to the bytes signature: INVALID_ARGUMENT;
* ``unknown_signature``: NOT_FOUND;
* ``not_an_image``: bytes that are neither PNG nor JPEG: INVALID_ARGUMENT;
* ``pinned_version``: a good request pinned to version 1 while version 2 is
  the latest (the server loads 1 on demand, once): expects OK.

The export is copied into a temporary model base as versions 1 and 2, so the
pinned requests have an older version to load. One request of each kind runs
before the measurement, so "before" is the server holding both versions and
the growth is what the load itself costs.

Every status code is counted per kind; a code other than the expected one is
``unexpected``. Latency percentiles are per kind. Loopback only, bounded in
count (clients x requests) and time (``--timeout`` per request).
"""

import argparse
import collections
import concurrent.futures
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

EXPECTED = {
    "good": "OK",
    "bomb": "INVALID_ARGUMENT",
    "wrong_dtype": "INVALID_ARGUMENT",
    "unknown_signature": "NOT_FOUND",
    "not_an_image": "INVALID_ARGUMENT",
    "pinned_version": "OK",
}


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def memory_kb(pid, field):
    """``VmRSS`` / ``VmHWM`` of a process in kB, from /proc (Linux)."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class RssSampler(threading.Thread):
    """Samples a process's resident set size every ``interval`` seconds; ``peak_kb`` is the largest."""

    def __init__(self, pid, interval=0.01):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_kb = memory_kb(pid, "VmRSS")
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.wait(self.interval):
            try:
                self.peak_kb = max(self.peak_kb, memory_kb(self.pid, "VmRSS"))
            except (OSError, KeyError):
                return

    def stop(self):
        self._stop_event.set()
        self.join()


def start_server(model_base, grpc_port, timeout=300):
    """``usss-tf serve`` on ``model_base`` as a subprocess, returned once a status call succeeds."""
    import grpc
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    command = [sys.executable, "-m", "usss_tf.cli", "serve", "--model-base", str(model_base),
               "--port", str(grpc_port), "--rest-port", str(free_port())]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "usss"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"usss-tf serve exited: {process.stderr.read()[-2000:]}")
        try:
            status = stub.GetModelStatus(request, timeout=2)
            if any(v.state == v.AVAILABLE for v in status.model_version_status):
                channel.close()
                return process
        except grpc.RpcError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"usss-tf serve did not become ready within {timeout}s")


def build_requests(signature, size):
    """``{kind: [PredictRequest, ...]}`` for every kind of ``EXPECTED``."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2
    from serve import scene_pngs

    from usss_tf import testing

    def request(signature_name, tensor):
        message = predict_pb2.PredictRequest()
        message.model_spec.name = "usss"
        message.model_spec.signature_name = signature_name
        message.inputs["images"].CopyFrom(tensor)
        message.output_filter.append("class_ids")
        return message

    def png_request(data):
        return request(signature, tf.make_tensor_proto([data], dtype=tf.string))

    def pinned(data):
        message = png_request(data)
        message.model_spec.version.value = 1
        return message

    good = scene_pngs(4, size)
    return {
        "good": [png_request(p) for p in good],
        "pinned_version": [pinned(p) for p in good],
        "bomb": [png_request(b) for b in testing.bombs().values()],
        "wrong_dtype": [request(signature, tf.make_tensor_proto(np.zeros((1, 8, 8, 3), np.uint8)))],
        "unknown_signature": [request("segment_nowhere", tf.make_tensor_proto([b"x"], dtype=tf.string))],
        "not_an_image": [png_request(b"GIF89a this is not a picture")],
    }


def run_load(address, requests_by_kind, mix, clients, requests, timeout):
    """Every client thread sends ``requests`` requests cycling through ``mix``; returns the records."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    start_together = threading.Barrier(clients)

    def client(index):
        channel = grpc.insecure_channel(address)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        records = []
        start_together.wait()
        for i in range(requests):
            kind = mix[(index + i) % len(mix)]
            pool = requests_by_kind[kind]
            begin = time.perf_counter()
            try:
                stub.Predict(pool[(index + i) % len(pool)], timeout=timeout)
                code = "OK"
            except grpc.RpcError as error:
                code = error.code().name
            records.append((kind, code, time.perf_counter() - begin))
        channel.close()
        return records

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        return [r for records in pool.map(client, range(clients)) for r in records]


def summarize(records):
    by_kind = collections.defaultdict(list)
    for kind, code, seconds in records:
        by_kind[kind].append((code, seconds))
    summary = {}
    for kind, items in sorted(by_kind.items()):
        ms = np.array([s for _, s in items]) * 1000.0
        codes = collections.Counter(code for code, _ in items)
        summary[kind] = {
            "requests": len(items),
            "codes": dict(sorted(codes.items())),
            "unexpected": sum(n for code, n in codes.items() if code != EXPECTED[kind]),
            "latency_ms_p50": round(float(np.percentile(ms, 50)), 1),
            "latency_ms_p99": round(float(np.percentile(ms, 99)), 1),
            "latency_ms_max": round(float(ms.max()), 1),
        }
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", default=None,
                        help="an exported version folder (<model_base>/<version>); default: an "
                             "untrained model exported by this script")
    parser.add_argument("--signature", default="serving_default", help="a bytes signature")
    parser.add_argument("--mix", default="good,bomb,wrong_dtype,unknown_signature,not_an_image,pinned_version",
                        help=f"comma-separated kinds among: {', '.join(EXPECTED)}")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=50, help="requests per client")
    parser.add_argument("--size", default="64x128", help="good images, HEIGHTxWIDTH")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument("--width", type=float, default=0.5, help="untrained model only")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    mix = [k.strip() for k in args.mix.split(",") if k.strip()]
    unknown = sorted(set(mix) - set(EXPECTED))
    if unknown or not mix:
        parser.error(f"--mix: unknown kind(s) {unknown}; choose among {', '.join(EXPECTED)}")
    size = tuple(int(v) for v in args.size.lower().split("x"))

    from serve import untrained_export
    from train_step import machine, write_report

    with tempfile.TemporaryDirectory(prefix="usss-serve-load-") as scratch:
        if args.export:
            source = pathlib.Path(args.export)
            model = f"export {source}"
        else:
            source = untrained_export(pathlib.Path(scratch) / "made", "erfnet", args.width)
            model = f"untrained erfnet width {args.width}, exported by this script"
        model_base = pathlib.Path(scratch) / "usss"
        for version in (1, 2):
            shutil.copytree(source, model_base / str(version))
        requests_by_kind = build_requests(args.signature, size)
        grpc_port = free_port()
        server = start_server(model_base, grpc_port)
        try:
            # One request of each kind first, so "before" is the server holding
            # what it serves (a pinned version included): growth measures the load.
            run_load(f"127.0.0.1:{grpc_port}", requests_by_kind, sorted(requests_by_kind), 1,
                     len(requests_by_kind), args.timeout)
            before_kb = memory_kb(server.pid, "VmRSS")
            sampler = RssSampler(server.pid)
            sampler.start()
            started = time.perf_counter()
            records = run_load(f"127.0.0.1:{grpc_port}", requests_by_kind, mix, args.clients,
                               args.requests, args.timeout)
            wall = time.perf_counter() - started
            sampler.stop()
            time.sleep(1.0)
            after_kb = memory_kb(server.pid, "VmRSS")
            hwm_kb = memory_kb(server.pid, "VmHWM")
        finally:
            server.terminate()
            server.wait(timeout=60)
    summary = summarize(records)
    report = {
        "benchmark": "serve_load",
        "machine": machine(),
        "model": model, "signature": args.signature, "mix": mix,
        "clients": args.clients, "requests_per_client": args.requests,
        "wall_seconds": round(wall, 2),
        "requests_per_second": round(len(records) / wall, 2),
        "unexpected_codes": sum(k["unexpected"] for k in summary.values()),
        "server_rss_mb": {
            "before": round(before_kb / 1024, 1),
            "peak_sampled": round(sampler.peak_kb / 1024, 1),
            "after": round(after_kb / 1024, 1),
            "high_water_mark_since_start": round(hwm_kb / 1024, 1),
            "peak_growth": round((sampler.peak_kb - before_kb) / 1024, 1),
        },
        "kinds": summary,
    }
    write_report(report, args.out)


if __name__ == "__main__":
    main()
