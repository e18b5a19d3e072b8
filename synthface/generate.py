"""``generate``: sample → geometry → render → shards, one task per shard, locally or in worker processes.

Determinism: sample ``i`` is drawn from ``(seed, i)`` and always computed and
rendered in slot ``i mod faces_per_draw`` of a ``faces_per_draw``-row batch
(padded when a shard cuts a batch), so its bytes do not depend on shard size,
worker count or resume.

Crash safety: a plan (``.synthface-run.json``) is written before any shard;
shards appear only complete (temporary name, fsync, rename); the manifest is
written last. ``resume=True`` keeps complete shards and redoes the others.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import queue
import shutil
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .backgrounds import BackgroundImages
from .config import SamplingConfig, config_from_dict
from .errors import ConfigError, ShardError, SynthfaceError
from .geometry import resolve_device
from .gl import create_context
from .loaders import load_model
from .model import MorphableModel
from .render import FaceRenderer, RenderSettings
from .resources import file_sha256
from .sampling import ParameterSampler
from .shards import (
    CODECS,
    DEFAULT_CODEC,
    LOCK,
    MANIFEST,
    MANIFEST_FORMAT,
    MANIFEST_VERSION,
    PLAN,
    SHARD_FORMAT,
    ShardWriter,
    atomic_write_text,
    locked_run_dir,
    read_attrs,
)

Events = Callable[[str], None]
"""``generate(events=...)``: called in the process that writes, with ``"batch"`` after each batch is
written into a shard, ``"commit"`` after each shard is renamed into place and ``"manifest"`` when the
manifest is complete under its temporary name — to watch a run, or (the crash tests) to kill it there."""
EXTRAS = ("normals", "pncc")


COMPRESSED_FRACTION = 0.5
"""Upper estimate of a shard's compressed size / uncompressed size for the lossless codecs (0.27 to
0.39 measured on the bundled head's defaults; ``benchmarks/bench_codecs.py``)."""
SHARD_OVERHEAD = 32_000
"""Bytes of HDF5 structure per shard (superblock, chunk indexes, attributes with the config)."""


@dataclass(frozen=True)
class ShardPlan(Sequence[tuple[str, int, int]]):
    """The shards of ``n`` samples, ``shard_size`` per shard: item k is (file name, first index, count)."""

    n: int
    shard_size: int

    def __len__(self) -> int:
        return -(-self.n // self.shard_size)

    def __getitem__(self, k: Any) -> Any:
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        if not -len(self) <= k < len(self):
            raise IndexError(f"shard {k} of {len(self)}")
        k %= len(self)
        first = k * self.shard_size
        return f"shard-{k:06d}.h5", first, min(self.shard_size, self.n - first)


@dataclass(frozen=True)
class GenerateJob:
    """Everything that decides a dataset's sample bytes (stored in the plan and the manifest)."""

    n: int
    seed: int = 0
    shard_size: int = 1000
    config: SamplingConfig = field(default_factory=SamplingConfig)
    extras: tuple[str, ...] = ()
    codec: str = DEFAULT_CODEC
    faces_per_draw: int = 64

    def __post_init__(self) -> None:
        checks = [
            (self.n >= 1, f"--n must be at least 1, got {self.n}"),
            (self.shard_size >= 1, f"--shard-size must be at least 1, got {self.shard_size}"),
            (0 <= self.seed < 2**63, f"--seed must be in [0, 2^63), got {self.seed}"),
            (self.faces_per_draw >= 1, f"faces_per_draw must be at least 1, got {self.faces_per_draw}"),
            (self.codec in CODECS, f"unknown codec {self.codec!r}; choose one of {', '.join(CODECS)}"),
            (set(self.extras) <= set(EXTRAS), f"unknown extras {self.extras}; choose from {', '.join(EXTRAS)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def shards(self) -> ShardPlan:
        """(file name, first index, count) of every shard, computed on access (a plan of any ``n``
        costs no memory)."""
        return ShardPlan(self.n, self.shard_size)

    def estimated_bytes(self) -> int:
        """About how many bytes the finished dataset takes: each sample's uncompressed arrays times
        :data:`COMPRESSED_FRACTION` (1 with ``codec="none"``), plus :data:`SHARD_OVERHEAD` per shard.
        Measured at 200 px on the bundled head: 139.8 kB per sample with Blosc-LZ4, 0.39 of the 360 kB
        uncompressed."""
        s = self.config.image_size
        raw = s * s * (3 + 4 + 1 + 1) + len(self.extras) * s * s * 12 + 4096  # + parameters, landmarks
        samples = self.n * raw * (1.0 if self.codec == "none" else COMPRESSED_FRACTION)
        return int(samples + len(self.shards()) * SHARD_OVERHEAD)

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "seed": self.seed, "shard_size": self.shard_size, "config": self.config.to_dict(),
                "extras": list(self.extras), "codec": self.codec, "faces_per_draw": self.faces_per_draw}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GenerateJob:
        return cls(n=d["n"], seed=d["seed"], shard_size=d["shard_size"], config=config_from_dict(d["config"]),
                   extras=tuple(d["extras"]), codec=d["codec"], faces_per_draw=d["faces_per_draw"])


# ---------------------------------------------------------------- one shard (runs in a worker or in-process)

_WORKER: dict[str, Any] = {}


def _init_worker(model: MorphableModel, job: GenerateJob, device: str, progress: Any,
                 backgrounds: BackgroundImages | None = None, events: Events | None = None) -> None:
    """Per-process state: its own GL context and renderer (never inherited from a parent)."""
    settings = RenderSettings(image_size=job.config.image_size, faces_per_draw=job.faces_per_draw,
                              normals="normals" in job.extras, pncc="pncc" in job.extras,
                              antialias=job.config.antialias, msaa_samples=job.config.msaa_samples)
    sampler = ParameterSampler(model, job.config, job.seed, backgrounds)
    _WORKER.update(model=model, job=job, progress=progress, sampler=sampler, events=events or _no_event,
                   renderer=FaceRenderer(model, settings, device=device, backgrounds=sampler.backgrounds))


def _no_event(_name: str) -> None:
    pass


def _release_worker() -> None:
    renderer = _WORKER.pop("renderer", None)
    if renderer is not None:
        renderer.release()
    _WORKER.clear()


def _shard_attrs(model: MorphableModel, job: GenerateJob) -> dict[str, Any]:
    return {"seed": job.seed, "model": model.name, "model_sha256": model.sha256,
            "config": job.config.to_json(), "synthface_version": __version__}


def _write_shard(out_dir: str, name: str, first: int, count: int) -> tuple[str, str, dict[str, float]]:
    """Render and write one shard; returns (file name, sha256, seconds per stage)."""
    model, job = _WORKER["model"], _WORKER["job"]
    sampler, renderer, progress, event = (_WORKER[k] for k in ("sampler", "renderer", "progress", "events"))
    f = job.faces_per_draw
    _WORKER.get("started", _no_event)(name)
    renderer.timings.clear()
    times = {"sample": 0.0, "write": 0.0}
    with ShardWriter(Path(out_dir) / name, model=model, image_size=job.config.image_size, first_index=first,
                     count=count, attrs=_shard_attrs(model, job), extras=job.extras, codec=job.codec) as writer:
        start, stop = first, first + count
        while start < stop:
            end = min(start - start % f + f, stop)  # up to the end of this sample's aligned batch
            t0 = time.perf_counter()
            params = sampler.sample(np.arange(start, end))
            t1 = time.perf_counter()
            rendered = renderer.render(params, slot=start % f)
            t2 = time.perf_counter()
            writer.write(params, rendered)
            event("batch")
            times["sample"] += t1 - t0
            times["write"] += time.perf_counter() - t2
            if progress is not None:
                progress(end - start)
            start = end
        t_commit = time.perf_counter()
    times["commit"] = time.perf_counter() - t_commit  # close, fsync, sha256, rename
    event("commit")
    return name, writer.sha256 or "", {**times, **renderer.timings}


# ---------------------------------------------------------------- the run

def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SynthfaceError(f"cannot read {path} ({exc}); start again in an empty directory") from exc


def _read_run_record(path: Path) -> dict[str, Any]:
    """The plan or manifest of a run, checked for what resuming reads (``job``, ``model``)."""
    record = _read_json(path)
    if not (isinstance(record, dict) and isinstance(record.get("job"), dict)
            and isinstance(record.get("model"), dict) and isinstance(record["model"].get("sha256"), str)):
        raise SynthfaceError(f"{path} is not a synthface run record (no job or model); it was damaged or "
                             "written by something else: start again in an empty directory")
    try:
        GenerateJob.from_dict(record["job"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SynthfaceError(f"{path}: its job is unreadable ({exc}); start again in an empty directory") from exc
    return record


def _model_record(model: MorphableModel) -> dict[str, str]:
    return {"name": model.name, "sha256": model.sha256, "source": model.source}


def _prepare(out: Path, job: GenerateJob, model: MorphableModel, *, resume: bool, join: bool,
             force: bool = False, expect: Mapping[str, Any] | None = None) -> GenerateJob:
    """Start a run in ``out``, or take up the one there; returns the job that decides its bytes.

    ``resume``: the stored plan (interrupted run) or manifest (finished run) wins over ``job``.
    ``join``: several jobs share one run by shard range, so a plan with the same job is accepted.
    ``force``: start a new run even if it looks larger than the free disk space. ``expect``: values
    (``n``, ``seed``, ``image_size``) the caller asked for explicitly; a resumed run that recorded
    others is refused rather than silently finished with its own.
    """
    plan = out / PLAN
    stored_path = plan if plan.is_file() else out / MANIFEST if (out / MANIFEST).is_file() else None
    stored = _read_run_record(stored_path) if stored_path else None
    if stored is None and not resume:
        if out.exists() and any(p.name != LOCK for p in out.iterdir()):
            raise SynthfaceError(f"--out {out} is not empty; choose a new or empty directory")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SynthfaceError(f"cannot create --out {out}: {exc.strerror or exc}; "
                                 "check the path and permissions") from exc
        if not force:
            _check_space(out, job)
        atomic_write_text(plan, json.dumps({"format": MANIFEST_FORMAT, "synthface_version": __version__,
                                            "model": _model_record(model), "job": job.to_dict()}, indent=1))
        return job
    if stored is None:
        raise SynthfaceError(f"--resume: {out} holds no interrupted synthface run; "
                             "drop --resume to start a new run in an empty directory")
    if not resume and not join:
        raise SynthfaceError(f"--out {out} is not empty; pass --resume to finish that run")
    if stored["model"]["sha256"] != model.sha256:  # _read_run_record checked the record's shape
        raise SynthfaceError(f"{out} was started with model {stored['model'].get('name', '?')} "
                             f"(sha256 {stored['model']['sha256'][:12]}…); pass the same --model")
    if resume:
        stored_job = GenerateJob.from_dict(stored["job"])
        recorded = {"n": stored_job.n, "seed": stored_job.seed, "image_size": stored_job.config.image_size}
        given = dict(expect or {})
        differ = [k for k, v in given.items() if k in recorded and recorded[k] != v]
        if differ:
            flags = {"n": "--n", "seed": "--seed", "image_size": "--size"}
            then = ", ".join(f"{flags[k]} {recorded[k]}" for k in differ)
            now = ", ".join(f"{flags[k]} {given[k]}" for k in differ)
            raise ConfigError(f"--resume: {out} was started with {then} (given: {now}); pass the recorded "
                              "values, or start a new run in an empty --out")
        for tmp in out.glob(".*.tmp"):  # partial shards / manifest of the interrupted run
            tmp.unlink()
        return stored_job
    if stored["job"] != job.to_dict():
        differ = sorted(k for k in stored["job"] if stored["job"][k] != job.to_dict().get(k))
        raise SynthfaceError(f"--shard-range: {out} holds a run with other settings ({', '.join(differ)}); "
                             "give every job of the run the same flags")
    return job


def generate(out: str | Path, job: GenerateJob, *, model: MorphableModel | None = None, workers: int = 1,
             device: str = "auto", resume: bool = False, shard_range: tuple[int, int] | None = None,
             backend: str = "local", ray_address: str | None = None,
             progress: Callable[[int], None] | None = None,
             stats: dict[str, float] | None = None, events: Events | None = None,
             force: bool = False, expect: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """Generate (or finish, with ``resume``) a dataset in ``out``; returns the manifest.

    ``shard_range=(a, b)`` writes only shards a..b-1, so disjoint jobs (a SLURM array, say) can
    share one run; it returns None until the job that completes the last shard writes the manifest.
    ``backend`` is a key of :data:`BACKENDS`; ``ray`` submits the same per-shard tasks to the Ray
    cluster at ``ray_address`` (None: a local one). ``progress(k)`` is called in this process each
    time ``k`` more samples are done. ``stats``, if given, receives the seconds spent per stage
    (sample, geometry, upload, draw, readback, compose, write, commit), summed over workers.
    ``events`` (see :data:`Events`) must be picklable with ``workers > 1``; Ray workers do not call it.
    A new run whose :meth:`GenerateJob.estimated_bytes` exceed the free disk space is refused unless
    ``force``. With ``resume``, ``expect`` (e.g. ``{"n": 500}``: what the user gave explicitly) must
    agree with the run's recorded ``n``, ``seed``, ``image_size``.
    """
    out = Path(out)
    model = model or load_model()
    device = resolve_device(device)
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "ray":
        _check_ray_address(ray_address)  # before the plan is written: Ray itself retries for minutes
    if out.exists() and not out.is_dir():
        raise SynthfaceError(f"--out {out} is a file; give a directory (new or empty)")
    if backend == "local":  # fail on a missing EGL before anything is written (Ray nodes check their own)
        create_context().release()
    # A bad background folder is one error before anything is written; workers reuse the scan.
    backgrounds = BackgroundImages.scan(job.config.background.directory) \
        if job.config.background.mode == "images" else None
    if shard_range is not None:  # jobs of one run by shard range may run at once: no run lock
        return _generate_locked(out, job, model, workers, device, resume, shard_range, backend, ray_address,
                                progress, stats, backgrounds, events, force, expect)
    with locked_run_dir(out, "generate"):
        return _generate_locked(out, job, model, workers, device, resume, shard_range, backend, ray_address,
                                progress, stats, backgrounds, events, force, expect)


def _generate_locked(out: Path, job: GenerateJob, model: MorphableModel, workers: int, device: str,
                     resume: bool, shard_range: tuple[int, int] | None, backend: str, ray_address: str | None,
                     progress: Callable[[int], None] | None, stats: dict[str, float] | None,
                     backgrounds: BackgroundImages | None, events: Events | None,
                     force: bool, expect: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if shard_range is not None and not resume:
        _check_shard_range(shard_range, len(job.shards()))  # before _prepare writes the plan
    job = _prepare(out, job, model, resume=resume, join=shard_range is not None, force=force, expect=expect)
    shards = job.shards()
    lo, hi = shard_range if shard_range is not None else (0, len(shards))
    _check_shard_range((lo, hi), len(shards))
    done: dict[str, str] = {}
    todo = []
    recorded = _recorded_sha256(out)
    for name, first, count in (shards[k] for k in range(lo, hi)):
        sha = _kept(out / name, first, count, job, model, recorded.get(name))
        if sha is not None:
            done[name] = sha
            if progress is not None:
                progress(count)
        else:  # missing, damaged, foreign or of another plan: (re)written
            todo.append((str(out), name, first, count))
    folder = job.config.background.directory  # the stored job's (on --resume), not necessarily the flags'
    if job.config.background.mode == "images":
        if backgrounds is None or backgrounds.root != Path(folder):
            backgrounds = BackgroundImages.scan(folder)
        listing = _check_backgrounds(out, backgrounds)
    else:
        listing = None
    results = BACKENDS[backend](todo, model, job, device, workers, progress, ray_address, backgrounds, events) \
        if todo else {}
    for name, (sha, times) in results.items():
        done[name] = sha
        if stats is not None:
            for stage, seconds in times.items():
                stats[stage] = stats.get(stage, 0.0) + seconds
    return _finalize(out, job, model, done, listing, events)


def _check_space(out: Path, job: GenerateJob) -> None:
    """Refuse a run that will not fit on the disk (before anything is written), with the figures."""
    need = job.estimated_bytes()
    where = out
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    if need > free:
        raise ConfigError(f"--n {job.n} at {job.config.image_size} px needs about {_human(need)} "
                          f"(~{_human(need / job.n)} per sample, codec {job.codec}) but {where} has "
                          f"{_human(free)} free; lower --n, free space, or pass --force")


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000:
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} PB"


def _check_shard_range(shard_range: tuple[int, int], n_shards: int) -> None:
    lo, hi = shard_range
    if not 0 <= lo < hi <= n_shards:
        raise ConfigError(f"--shard-range {lo}:{hi} is outside the run's {n_shards} shards (0:{n_shards})")


def _check_backgrounds(out: Path, backgrounds: BackgroundImages) -> dict[str, object]:
    """The image folder must list the same files as when the run started (which file sample i shows
    depends on the listing): the plan records it on the first call; later calls (--resume, other
    shard ranges) compare. Returns the record, for the manifest."""
    now = backgrounds.record()
    stored_path = out / PLAN if (out / PLAN).is_file() else out / MANIFEST
    stored = _read_json(stored_path)
    recorded = stored.get("backgrounds")
    if recorded is None:
        if stored_path.name == PLAN:
            atomic_write_text(out / PLAN, json.dumps({**stored, "backgrounds": now}, indent=1))
        return now
    if recorded.get("listing_sha256") != now["listing_sha256"]:
        raise SynthfaceError(f"--backgrounds {backgrounds.root} changed since the run started ({recorded.get('files')} "
                             f"files then, {now['files']} now, or other contents); restore the folder as it was, "
                             "or start a new run in an empty --out")
    return now


def _finalize(out: Path, job: GenerateJob, model: MorphableModel, known: dict[str, str],
              backgrounds: dict[str, object] | None = None, events: Events | None = None) -> dict[str, Any] | None:
    """Write the manifest once every shard exists (None before that); the plan goes last."""
    sha = {}
    for name, first, count in job.shards():
        kept = known.get(name) or _kept(out / name, first, count, job, model)
        if kept is None:
            return None
        sha[name] = kept
    manifest = {
        "format": MANIFEST_FORMAT, "format_version": MANIFEST_VERSION, "synthface_version": __version__,
        "seed": job.seed, "n": job.n, "image_size": job.config.image_size, "config": job.config.to_dict(),
        "model": _model_record(model), "shard_format": SHARD_FORMAT, "job": job.to_dict(),
        "shards": [{"file": name, "first_index": first, "count": count, "sha256": sha[name]}
                   for name, first, count in job.shards()],
    }
    if backgrounds is not None:  # the image folder's listing (see _check_backgrounds)
        manifest["backgrounds"] = backgrounds
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1),
                      before_rename=lambda: (events or _no_event)("manifest"))
    (out / PLAN).unlink(missing_ok=True)
    return manifest


def _recorded_sha256(out: Path) -> dict[str, str]:
    """The shards' sha256 as a finished run's manifest records them (none for an interrupted run)."""
    try:
        manifest = json.loads((out / MANIFEST).read_text())
        return {str(e["file"]): str(e["sha256"]) for e in manifest["shards"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _kept(path: Path, first: int, count: int, job: GenerateJob, model: MorphableModel,
          sha256: str | None = None) -> str | None:
    """The sha256 of the shard at ``path`` if it is exactly the one planned — renamed into place whole
    (attributes readable), of this run's seed, model and config and of its index range, and with the
    recorded ``sha256`` if there is one — else None: a resumed run rewrites it rather than bless a
    damaged or foreign file."""
    if not path.is_file():
        return None
    try:
        attrs = read_attrs(path)
    except ShardError:
        return None
    want = _shard_attrs(model, job)
    if (int(attrs.get("first_index", -1)), int(attrs.get("count", -1))) != (first, count) \
            or any(str(attrs.get(k)) != str(want[k]) for k in ("seed", "model_sha256", "config")):
        return None
    actual = file_sha256(path)
    return actual if sha256 is None or actual == sha256 else None


Task = tuple[str, str, int, int]  # out dir, shard file name, first index, count
Results = dict[str, tuple[str, dict[str, float]]]  # shard file name → (sha256, seconds per stage)


def _run_local(todo: list[Task], model: MorphableModel, job: GenerateJob, device: str, workers: int,
               progress: Callable[[int], None] | None, _address: str | None,
               backgrounds: BackgroundImages | None, events: Events | None) -> Results:
    """In this process (one worker), or a pool of spawned processes each with its own GL context."""
    if workers == 1 or len(todo) == 1:
        _init_worker(model, job, device, progress, backgrounds, events)
        try:
            return {name: (sha, times) for name, sha, times in (_write_shard(*task) for task in todo)}
        finally:
            _release_worker()
    ctx = multiprocessing.get_context("spawn")  # GL and CUDA state must never be forked
    messages = ctx.Queue()  # from the workers: k (k more samples done) or ("started", shard name)
    results: Results = {}
    started: set[str] = set()

    def drain(timeout: float | None) -> None:
        try:
            while True:
                message = messages.get(timeout=timeout) if timeout else messages.get_nowait()
                timeout = None
                if isinstance(message, tuple):
                    started.add(message[1])
                elif progress is not None:
                    progress(message)
        except queue.Empty:
            pass

    pool = ProcessPoolExecutor(min(workers, len(todo)), mp_context=ctx, initializer=_init_pool_worker,
                               initargs=(model, job, device, messages, backgrounds, events))
    try:
        pending = {pool.submit(_write_shard, *task) for task in todo}
        while pending:
            drain(0.1)
            done, pending = wait(pending, timeout=0, return_when=FIRST_COMPLETED)
            for future in done:
                try:
                    name, sha, times = future.result()  # re-raises a worker's SynthfaceError here
                except BrokenProcessPool:
                    drain(None)
                    lost = sorted(started - set(results)) or sorted(t[1] for t in todo if t[1] not in results)
                    raise SynthfaceError(f"a worker process died while writing {lost[0]} (killed by a signal, e.g. "
                                         "by the out-of-memory killer); free memory or lower --workers, then run "
                                         "generate --resume to finish") from None
                results[name] = (sha, times)
        drain(None)
    except BaseException:
        _stop(pool)  # an error, Ctrl-C or SIGTERM: no worker goes on writing after this run ends
        raise
    pool.shutdown()
    return results


def _stop(pool: ProcessPoolExecutor) -> None:
    """Terminate a pool's workers now (Python < 3.14 has no public call for it) and shut it down."""
    terminate = getattr(pool, "terminate_workers", None)
    if terminate is not None:
        terminate()
    else:
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


def _init_pool_worker(model: MorphableModel, job: GenerateJob, device: str, messages: Any,
                      backgrounds: BackgroundImages | None, events: Events | None) -> None:
    os.environ.setdefault("LP_NUM_THREADS", "1")  # llvmpipe: one raster thread per worker process
    _init_worker(model, job, device, messages.put, backgrounds, events)
    _WORKER["started"] = lambda name: messages.put(("started", name))


def _ray_shard(model: MorphableModel, job: GenerateJob, device: str, *task: Any) -> tuple[str, str, dict]:
    """One shard in a Ray worker; the worker keeps its renderer for the next task of the same run."""
    key = (model.sha256, json.dumps(job.to_dict(), sort_keys=True), device)
    if _WORKER.get("key") != key:
        _release_worker()
        _init_worker(model, job, device, None)
        _WORKER["key"] = key
    return _write_shard(*task)


RAY_CONNECT_TIMEOUT_S = 10.0
"""How long an explicit ``--ray-address`` may take to accept a TCP connection."""


def _check_ray_address(address: str | None) -> None:
    """An explicit ``HOST:PORT`` (or ``ray://HOST:PORT``) must accept a connection; None and ``auto``
    are Ray's to resolve."""
    if address is None or address == "auto":
        return
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"--ray-address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=RAY_CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise SynthfaceError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); check "
                             "--ray-address (e.g. 'auto' on a cluster node) and that the head node runs") from exc


def _run_ray(todo: list[Task], model: MorphableModel, job: GenerateJob, device: str, workers: int,
             progress: Callable[[int], None] | None, address: str | None,
             _backgrounds: BackgroundImages | None, _events: Events | None) -> Results:
    """The same per-shard tasks on a Ray cluster (``address``; None starts a local one); each node scans
    the background folder (``background.directory``, which it must see at the same path) itself."""
    try:
        import ray
    except ImportError as exc:
        raise SynthfaceError("--backend ray needs Ray; pip install 'synthface[ray]'") from exc
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                     **({"num_cpus": workers} if address is None else {}))
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise SynthfaceError(f"cannot reach the Ray cluster at {address or 'local'}: {exc}; "
                                 "check --ray-address (e.g. 'auto' on a cluster node)") from exc
    try:
        task = ray.remote(num_cpus=1)(_ray_shard)
        model_ref = ray.put(model)
        pending = {task.remote(model_ref, job, device, *t): t for t in todo}
        results: Results = {}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                try:
                    name, sha, times = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    raise (exc.cause if isinstance(exc.cause, SynthfaceError) else exc) from None
                results[name] = (sha, times)
                if progress is not None:
                    progress(pending.pop(ref)[3])
        return results
    finally:
        if started:
            ray.shutdown()


BACKENDS = {"local": _run_local, "ray": _run_ray}
"""Where shard tasks run: this machine's processes, or a Ray cluster (``pip install 'synthface[ray]'``)."""
