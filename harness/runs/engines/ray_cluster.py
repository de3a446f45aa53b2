"""The Ray engine: a run's units on a Ray cluster (one machine or many), the results store still written by the
driver alone.

* **Workers** are Ray actors, one pool per run. A worker builds a model at its first unit of it (its file, card
  and images, then its runtime from the gradient-model cache of its machine) and keeps it for the next units;
  it holds one model at a time, so a worker's memory is one model's. A worker checks that it sees the driver's
  model: the same content-and-card key and the same image keys, else the run stops before any of its rows is
  written.
* **Data.** Generated sets (``shapes``, ``digits``, ``photos``) are rebuilt on the workers from (seed, i).
  Images from a folder or CSV, and Expected Gradients' references drawn from it, are shipped from the driver
  through Ray's object store (the default), or, with ``ship_images=False``, read by the workers from the same
  path, which every machine must then share. The model's key covers its reference set, so a worker that drew
  other references is refused like one that reads another model. Model
  files (and card sidecars) are read by the workers from the driver's path: every machine needs them there.
* **Faults.** Actors restart when they die (``max_restarts``) and a unit in flight on a dead actor is retried
  on its successor (``max_task_retries``); the driver writes each unit's rows in one transaction with
  ``INSERT OR IGNORE``, so a retried unit neither loses nor duplicates a row. A killed driver resumes like the
  local engine: the store knows what is done.
* **Devices.** Where ONNX Runtime has the CUDA provider and the cluster has GPUs, each actor asks Ray for
  ``gpus_per_worker`` of a GPU (a fraction shares one) and creates its session on the device Ray assigned (the
  only one it sees); the runtime then binds inputs and outputs to that device (IOBinding).
"""

from __future__ import annotations

import os
from collections import deque
from typing import Iterator

import numpy as np
import onnxruntime as ort
import ray

from harness.core.errors import HarnessError
from harness.metrics import get_metric
from harness.runs.engines.base import ENGINES, Outcome, Work
from harness.runs.subject import ModelUnderTest

IN_FLIGHT = 2            # units queued per worker: one running, one ready to start the moment it ends
RESTARTS = 3             # times a dead worker is restarted (and a unit in flight retried) before the run fails


@ray.remote(max_restarts=RESTARTS, max_task_retries=RESTARTS)
class ModelWorker:
    """A worker of the run: evaluates units of any model, holding one model at a time (built at the first unit
    of a model from the driver's arguments, so a pool serves a whole run and memory stays one model's)."""

    def __init__(self, threads: int | None, provider: str | None):
        self.threads, self.provider = threads, provider
        if threads:
            os.environ["HARNESS_CPUS"] = str(threads)     # this process's share: MI's threads, the runtime's streams
        self.name, self.subject = None, None

    def evaluate(self, task, name: str, spec: dict, data, references, identity: tuple, method,
                 images: tuple[int, ...], metrics: list[str]):
        """One unit of the model ``name``: the run's ``task`` (by default
        :meth:`harness.runs.subject.ModelUnderTest.evaluate`). A model whose key or image keys differ from the
        driver's ``identity`` is refused (another file, card or images here)."""
        if self.name != name:
            self.name, self.subject = None, None      # the previous model's runtime goes before the next one's
            subject = ModelUnderTest(**spec, data=data, references=references, threads=self.threads,
                                     provider=self.provider)
            if (subject.key, subject.image_keys) != identity:
                raise HarnessError(f"{name}: a Ray worker reads a different model file, card or images than the "
                                   "driver; every machine needs the same files at the same paths")
            self.name, self.subject = name, subject
        return task(self.subject, method, np.asarray(images), {m: get_metric(m) for m in metrics})


def _result(reference):
    """``ray.get``, with a user error raised on a worker (bad input) raised here as itself (exit 2)."""
    try:
        return ray.get(reference)
    except ray.exceptions.RayError as error:
        cause = getattr(error, "cause", None)
        if isinstance(cause, HarnessError):
            raise cause from None
        raise


@ENGINES.register("ray")
class RayEngine:
    """Units on a Ray cluster: ``address`` (None starts a local one; "auto" joins the running one), ``workers``
    in the run's pool (default: as many as the cluster's CPUs, or GPUs, allow), ``cpus_per_worker`` (also the
    runtime's threads), ``gpus_per_worker`` (default 1 where CUDA is available, else 0), ``ship_images``."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, cpus_per_worker: int = 1,
                 gpus_per_worker: float | None = None, ship_images: bool = True):
        if cpus_per_worker < 1 or (workers is not None and workers < 1):
            raise HarnessError("Ray workers and their CPUs must be positive numbers")
        if gpus_per_worker is not None and gpus_per_worker < 0:
            raise HarnessError(f"a worker's share of a GPU must not be negative, got {gpus_per_worker}")
        self.address, self.workers, self.cpus = address, workers, cpus_per_worker
        self.gpus, self.ship_images = gpus_per_worker, ship_images
        self.pool: list = []          # the run's workers (tests kill one to check recovery)

    def _connect(self) -> None:
        """Join (or start) the cluster once."""
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            except (ConnectionError, ValueError, RuntimeError) as error:
                raise HarnessError(f"cannot reach the Ray cluster at {self.address or 'a new local one'}: "
                                   f"{error}") from None

    def _sizes(self) -> tuple[int, float]:
        """The pool's size and each worker's GPU share, checked against the cluster before any actor starts: a
        worker no node can hold, or more workers than the cluster holds, would wait for ever."""
        nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
        cuda = "CUDAExecutionProvider" in ort.get_available_providers() and any(n.get("GPU", 0) for n in nodes)
        gpus = self.gpus if self.gpus is not None else (1.0 if cuda else 0.0)
        fits = sum(int(min(n.get("CPU", 0) // self.cpus, n.get("GPU", 0) // gpus if gpus else float("inf")))
                   for n in nodes)
        if fits < 1:
            raise HarnessError(f"no node of the Ray cluster can hold a worker of {self.cpus} CPU(s)"
                               + (f" and {gpus:g} GPU" if gpus else "") + "; lower --ray-cpus or --ray-gpus")
        if self.workers is not None and self.workers > fits:
            raise HarnessError(f"the Ray cluster holds {fits} worker(s) of {self.cpus} CPU(s)"
                               + (f" and {gpus:g} GPU" if gpus else "") + f", not {self.workers}; lower --ray-workers")
        return self.workers or fits, gpus

    def run(self, work: Work) -> Iterator[Outcome]:
        """The units on one pool of workers, in the local order as far as workers are free; outcomes in the
        order they finish."""
        self._connect()
        workers, gpus = self._sizes()
        models = {}
        for name in dict.fromkeys(unit.model for unit in work.units):
            subject = work.models[name]
            shipped = not subject.generated and self.ship_images
            data = ray.put(subject.data) if shipped else None
            references = ray.put(subject.references) if shipped else None
            models[name] = (subject.spec(), data, references, (subject.key, subject.image_keys))
        options = {"num_cpus": self.cpus, "num_gpus": gpus}
        self.pool = [ModelWorker.options(**options).remote(self.cpus, "cuda" if gpus else None)
                     for _ in range(min(workers, len(work.units)))]
        try:
            queue, pending = deque(work.units), {}
            for worker in self.pool:
                for _ in range(IN_FLIGHT):
                    self._submit(worker, queue, pending, work, models)
            while pending:
                (ready,), _ = ray.wait(list(pending), num_returns=1)
                unit, worker = pending.pop(ready)
                values, maps, seconds = _result(ready)
                self._submit(worker, queue, pending, work, models)
                yield Outcome(unit, values, maps, seconds)
        finally:
            for worker in self.pool:
                ray.kill(worker, no_restart=True)
            self.pool = []

    @staticmethod
    def _submit(worker, queue: deque, pending: dict, work: Work, models: dict) -> None:
        if queue:
            unit = queue.popleft()
            reference = worker.evaluate.remote(work.task, unit.model, *models[unit.model],
                                               work.methods[unit.model][unit.method], unit.images,
                                               work.metrics[unit.model])
            pending[reference] = (unit, worker)
