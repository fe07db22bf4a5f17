"""Serving throughput and latency: the embedded gRPC server vs the same signature in process; JSON out.

    python benchmarks/serve.py --export saved_models/usss/1 --size 256x512
    python benchmarks/serve.py --size 256x512            # no export: an untrained model, see below

The server (``usss_tf.serving.server.ModelServer``) runs in this process on
free loopback ports; clients are threads with their own gRPC channel each,
sending PNG bytes of rendered synthetic street scenes to a bytes signature
(``serving_default`` unless ``--signature``) with ``output_filter:
["class_ids"]`` -- what ``usss-tf predict`` sends. For each batch size (1, 8)
and client count (1, 4) it reports requests/s, images/s and p50/p99 latency,
next to the same signature called directly on the loaded SavedModel from the
same number of threads (no gRPC, no protobuf). Both compute every output (the
signature has no pruning); the two paths are timed in alternating chunks so
that load from other users of a shared machine hits both alike.

Without ``--export`` it trains nothing: it builds an untrained
``UniversalSegmenter`` (two synthetic domains, ``--backbone``/``--width``) and
exports it with ``usss_tf.export.export_model`` into a temporary folder. The
weights do not change the arithmetic, so the figures hold for a trained model
of that architecture; the JSON says which model was measured.
"""

import argparse
import concurrent.futures
import io
import json
import os
import pathlib
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402
from train_step import machine, write_report  # noqa: E402

BATCHES = (1, 8)
CLIENTS = (1, 4)
DOMAINS = {"synth_city": 10, "synth_camvid": 7}


def untrained_export(model_base, backbone, width):
    """Exports an untrained two-domain model as ``model_base/1``; returns the version folder."""
    import keras

    from usss_tf import domains as registry
    from usss_tf.export import export_model
    from usss_tf.model.segmenter import UniversalSegmenter

    keras.utils.set_random_seed(0)
    model = UniversalSegmenter(DOMAINS, backbone=backbone, width=width)
    model.build()
    return export_model(model, [registry.get_domain(d) for d in DOMAINS], pathlib.Path(model_base) / "1")


def scene_pngs(count, size, seed=0):
    """PNG bytes of ``count`` rendered synth_city scenes of ``size`` (H, W)."""
    from usss_tf.data.synthetic import render_scene

    rng = np.random.default_rng(seed)
    pngs = []
    for _ in range(count):
        image, _ = render_scene("synth_city", rng, size=size)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    return pngs


def _summary(path, batch, clients, latencies, wall):
    latencies = np.asarray(latencies) * 1000.0
    return {
        "path": path, "batch": batch, "clients": clients, "requests": int(latencies.size),
        "requests_per_second": round(latencies.size / wall, 2),
        "images_per_second": round(latencies.size * batch / wall, 2),
        "latency_ms_p50": round(float(np.percentile(latencies, 50)), 1),
        "latency_ms_p99": round(float(np.percentile(latencies, 99)), 1),
    }


def run_clients(clients, requests, call):
    """Runs ``call()`` ``requests`` times in each of ``clients`` threads; (latencies, wall seconds)."""
    start_together = threading.Barrier(clients)

    def client():
        start_together.wait()
        times = []
        for _ in range(requests):
            begin = time.perf_counter()
            call()
            times.append(time.perf_counter() - begin)
        return times

    begin = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        per_client = list(pool.map(lambda _: client(), range(clients)))
    return [t for times in per_client for t in times], time.perf_counter() - begin


def in_process_call(function, images):
    """One call of the loaded signature on the batch, as a no-argument function."""
    batch = tf.constant(images)

    def call():
        function(images=batch)["class_ids"].numpy()

    return call


def grpc_call(address, version, signature, images):
    """One Predict of the batch over gRPC (a channel per client thread), as a no-argument function."""
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "usss"
    request.model_spec.version.value = version
    request.model_spec.signature_name = signature
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(images, dtype=tf.string))
    request.output_filter.append("class_ids")
    local = threading.local()

    def call():
        if not hasattr(local, "stub"):
            local.channel = grpc.insecure_channel(address)
            local.stub = prediction_service_pb2_grpc.PredictionServiceStub(local.channel)
        tf.make_ndarray(local.stub.Predict(request, timeout=600).outputs["class_ids"])

    return call


def measure(calls, batch, clients, requests, warmup, chunk=5):
    """Times every path of ``calls`` ({path: call}) in alternating chunks of ``chunk`` requests per
    client, so a change in the machine's load (it is shared) hits all paths alike."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    latencies = {path: [] for path in calls}
    walls = dict.fromkeys(calls, 0.0)
    done = 0
    while done < requests:
        count = min(chunk, requests - done)
        for path, call in calls.items():
            times, wall = run_clients(clients, count, call)
            latencies[path] += times
            walls[path] += wall
        done += count
    return [_summary(path, batch, clients, latencies[path], walls[path]) for path in calls]


def _parse_size(text):
    height, width = (int(v) for v in text.lower().split("x"))
    return height, width


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", default=None,
                        help="an exported version folder (<model_base>/<version>); default: an untrained model")
    parser.add_argument("--signature", default="serving_default", help="a bytes signature of the export")
    parser.add_argument("--size", default="256x512", help="image size HEIGHTxWIDTH")
    parser.add_argument("--requests", type=int, default=20, help="timed requests per client")
    parser.add_argument("--warmup", type=int, default=2, help="untimed requests before each measurement")
    parser.add_argument("--backbone", default="erfnet", help="untrained model only")
    parser.add_argument("--width", type=float, default=0.5, help="untrained model only (quickstart: 0.5)")
    parser.add_argument("--smoke", action="store_true", help="32x64 images, width 0.125, 2 requests")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    if args.smoke:
        args.size, args.requests, args.warmup, args.width = "32x64", 2, 1, 0.125
    size = _parse_size(args.size)

    from usss_tf.serving.server import ModelServer

    with tempfile.TemporaryDirectory(prefix="usss-serve-bench-") as scratch:
        if args.export:
            version_dir = pathlib.Path(args.export)
            model = {"source": f"export {version_dir}"}
        else:
            started = time.perf_counter()
            version_dir = untrained_export(pathlib.Path(scratch) / "usss", args.backbone, args.width)
            model = {"source": "untrained UniversalSegmenter exported by this script (latency only; "
                               "no accuracy meaning)",
                     "backbone": args.backbone, "width": args.width, "domains": DOMAINS,
                     "export_seconds": round(time.perf_counter() - started, 1)}
        version = int(version_dir.name)
        images = scene_pngs(max(BATCHES), size)
        started = time.perf_counter()
        server = ModelServer(version_dir.parent, model_name="usss", port=0, rest_port=None,
                             max_message_mb=256, max_inflight=8).start()
        model["server_start_seconds"] = round(time.perf_counter() - started, 1)
        in_process = tf.saved_model.load(str(version_dir))  # kept alive: it owns the variables
        results = []
        load_before = os.getloadavg()[0]
        try:
            for batch in BATCHES:
                for clients in CLIENTS:
                    calls = {
                        "in_process": in_process_call(in_process.signatures[args.signature], images[:batch]),
                        "grpc": grpc_call(server.grpc_address, version, args.signature, images[:batch]),
                    }
                    for result in measure(calls, batch, clients, args.requests, args.warmup):
                        results.append(result)
                        print(json.dumps(result), file=sys.stderr)
        finally:
            server.stop(grace=1)
    report = {
        "benchmark": "serve", "machine": machine(),
        "tensorflow": tf.__version__, "size": list(size), "signature": args.signature,
        "png_bytes_per_image": int(np.mean([len(p) for p in images])),
        "grpc_request": "PNG bytes, output_filter class_ids, one channel per client thread",
        "in_process_call": "loaded.signatures[signature](images=...) on the same bytes",
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "model": model, "results": results,
    }
    write_report(report, args.out)


if __name__ == "__main__":
    main()
