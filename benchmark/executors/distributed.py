"""Run specs on a Ray cluster: one Ray task per run, placed by the resources it needs.

A RunSpec is plain data, so a node needs nothing but the spec (and methodbench with the
same plugins installed). On its node a task runs the spec exactly as the local executor
does, in a process of its own with the spec's timeout, so a crash, an out-of-memory kill or
a timeout still becomes a record; the task returns the record and the driver, the only
writer of the store, writes it and tells the observers. A task that Ray itself loses (a
node that dies) becomes a ``failed`` record naming the Ray error; the suite goes on.

Resources: each run asks for ``threads_per_job`` CPUs, and one GPU when its device is
``cuda``, so Ray never packs two GPU runs onto one device (clean memory and timing figures).
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmark.executors.capped_log import read_tail
from benchmark.executors.local import (
    LOG_TAIL,
    LocalExecutor,
    RunEvents,
    SilentEvents,
    _finish,
)
from benchmark.host import Registry
from benchmark.records import RunRecord, RunSpec


def run_on_node(spec_json: str, plugins: Sequence[str], threads: int) -> str:
    """Body of the Ray task: one spec in its own process on this node, its record as JSON."""
    spec = RunSpec.model_validate_json(spec_json)
    with tempfile.TemporaryDirectory(prefix="methodbench-ray-") as tmp:
        # Ray packs tasks on a node as its CPUs allow: how many shared the machine with this
        # one is unknown here, and the record says so (concurrent_runs null).
        local = LocalExecutor(
            Path(tmp),
            None,
            jobs=1,
            plugins=plugins,
            threads_per_job=threads,
            concurrency_known=False,
        )
        (record,) = local.collect([spec], SilentEvents(), lambda r: r)
        if record.log_tail is None:
            # Decoded leniently: a capped log can cut a character in two, and a plugin may
            # print bytes that are not UTF-8; neither may turn an ok run into a failed task.
            tail = read_tail(Path(tmp) / "logs" / f"{spec.id}.log", LOG_TAIL)
            record = record.model_copy(update={"log_tail": tail})
    return record.model_dump_json()


class RayExecutor:
    """Each spec a Ray task; ``address`` None starts (or joins) a local Ray instance."""

    def __init__(
        self,
        results_dir: Path,
        registry: Registry,
        *,
        address: str | None = None,
        plugins: Sequence[str] = (),
        threads_per_job: int = 1,
        init_options: dict[str, Any] | None = None,
    ) -> None:
        self.results_dir = Path(results_dir)
        self.registry = registry
        self.address = address
        self.plugins = list(plugins)
        self.threads = max(1, threads_per_job)
        self.init_options = init_options or {}

    def _ray(self) -> Any:
        try:
            import ray
        except ImportError as exc:
            raise RuntimeError(
                "the Ray executor needs Ray: pip install 'methodbench[distributed]'"
            ) from exc
        if not ray.is_initialized():
            ray.init(
                address=self.address,
                include_dashboard=False,
                log_to_driver=False,
                **self.init_options,
            )
        return ray

    def run(self, specs: Sequence[RunSpec], events: RunEvents | None = None) -> list[RunRecord]:
        events = events or SilentEvents()
        if not specs:
            return []
        ray = self._ray()
        task = ray.remote(run_on_node)
        pending: dict[Any, tuple[RunSpec, str]] = {}
        for spec in specs:
            gpus = 1 if str(spec.device).startswith("cuda") else 0
            ref = task.options(num_cpus=self.threads, num_gpus=gpus, max_retries=0).remote(
                spec.model_dump_json(), self.plugins, self.threads
            )
            pending[ref] = (spec, dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
            events.started(spec)
            events.progress(spec, "queued on Ray")
        records = []
        try:
            self._gather(ray, pending, records, events)
        finally:
            # Interrupted: tasks still queued or running on the cluster are cancelled, not
            # left to run (and write nowhere) after the driver is gone.
            for ref in pending:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # best effort on the way out
                    continue
        return records

    def _gather(self, ray: Any, pending: dict[Any, tuple[RunSpec, str]], records, events):  # type: ignore[no-untyped-def]
        """Store each task's record as it lands (``pending`` shrinks as they do)."""
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                spec, queued_at = pending.pop(ref)
                try:
                    record = RunRecord.model_validate_json(ray.get(ref))
                except Exception as exc:  # the task itself was lost, not the run
                    record = RunRecord(
                        id=spec.id,
                        spec=spec,
                        status="failed",
                        reason=f"Ray task failed: {type(exc).__name__}: {exc}"[:2000],
                        started_at=queued_at,
                    )
                records.append(_finish(self.results_dir, self.registry, record, events))
