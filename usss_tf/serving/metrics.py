"""Prometheus metrics of the embedded server, under TF Serving's names where it has them.

Served at ``/monitoring/prometheus/metrics`` on the REST port when the server
runs with ``--monitoring`` (TF Serving's path), in Prometheus' text format
written by ``prometheus_client``:

* ``:tensorflow:serving:request_count{model_name, status}``: Predict requests
  by outcome (``OK`` or the gRPC code's name). Exposed untyped:
  prometheus_client would rename a counter to ``..._total``, and TF Serving's
  name is the one dashboards use;
* ``:tensorflow:serving:request_latency{model_name, API, entrypoint}``:
  histogram of Predict wall time in microseconds (TF Serving's unit), API
  ``predict``, entrypoint ``GRPC`` or ``REST``;
* ``usss_serving_loaded_versions{model_name}``, ``usss_serving_inflight_requests``
  and ``usss_serving_queued_requests``: what the server holds right now.

``model_name`` is the request's model only when the server serves a model of
that name; any other name (a typo, a malformed path, a client trying names)
counts under ``model_name=""``. Every label value would otherwise be a new
series kept for the server's life: requests with made-up names would grow its
memory without bound.
"""

import collections
import contextlib
import threading
import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from usss_tf.serving.status import RequestError

METRICS_PATH = "/monitoring/prometheus/metrics"
CONTENT_TYPE = CONTENT_TYPE_LATEST
REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
# Microseconds, 10 us x 1.8^i as TF Serving's request_latency buckets.
LATENCY_BUCKETS_US = tuple(10 * 1.8**i for i in range(33))


class _Current(Collector):
    """Request counts and the server's present state, read when scraped."""

    def __init__(self, metrics):
        self.metrics = metrics

    def collect(self):
        counts = Metric(REQUEST_COUNT, "Number of requests, by model and status", "untyped")
        with self.metrics.lock:
            items = sorted(self.metrics.counts.items())
        for (model, status), value in items:
            counts.add_sample(REQUEST_COUNT, {"model_name": model, "status": status}, value)
        yield counts
        loaded = GaugeMetricFamily("usss_serving_loaded_versions", "Versions loaded, by model",
                                   labels=["model_name"])
        for model, count in sorted(self.metrics.loaded_versions().items()):
            loaded.add_metric([model], count)
        yield loaded
        admission = self.metrics.admission
        yield GaugeMetricFamily("usss_serving_inflight_requests", "Predict requests running",
                                value=admission.running if admission else 0)
        yield GaugeMetricFamily("usss_serving_queued_requests", "Predict requests waiting for a slot",
                                value=(admission.admitted - admission.running) if admission else 0)


class ServingMetrics:
    """Counts and times requests; ``exposition()`` is the scrape's body.

    Args:
      loaded_versions: ``() -> {model name: versions loaded}``.
      admission: the server's ``Admission`` (in-flight and queued gauges), or None.
      serves: ``(model name) -> bool``, whether the server serves that model (the
        names that get their own ``model_name`` label); default: the names of
        ``loaded_versions``.
    """

    def __init__(self, loaded_versions=dict, admission=None, serves=None):
        self.loaded_versions = loaded_versions
        self.admission = admission
        self.serves = serves or (lambda model_name: model_name in loaded_versions())
        self.lock = threading.Lock()
        self.counts = collections.Counter()
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            REQUEST_LATENCY, "Distribution of wall time (in microseconds) of requests",
            ["model_name", "API", "entrypoint"], registry=self.registry, buckets=LATENCY_BUCKETS_US,
        )
        self.registry.register(_Current(self))

    @contextlib.contextmanager
    def request(self, model_name, api, entrypoint):
        """Counts the request by outcome and times it (also when it fails)."""
        started = time.perf_counter()
        label = self._label(model_name)
        status = "OK"
        try:
            yield
        except RequestError as error:
            status = error.code.name
            raise
        except Exception:
            status = "INTERNAL"
            raise
        finally:
            self._count(label, status)
            self.latency.labels(label, api, entrypoint).observe((time.perf_counter() - started) * 1e6)

    def count(self, model_name, status):
        """Counts one Predict request under ``status``; alone, for one refused before it ran
        (the server shutting down, every slot taken), which has no latency to time."""
        self._count(self._label(model_name), status)

    def _count(self, label, status):
        with self.lock:
            self.counts[(label, status)] += 1

    def _label(self, model_name):
        """``model_name`` if the server serves it, else "": one series for every other name."""
        return model_name if model_name and self.serves(model_name) else ""

    def exposition(self):
        """The Prometheus text-format page (bytes)."""
        return generate_latest(self.registry)
