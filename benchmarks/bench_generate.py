"""End-to-end generation speed of synthface against the per-sample pyrender loop a user would otherwise write.

    python benchmarks/bench_generate.py                       # bundled model, 1000 vs 200 samples at 200x200
    python benchmarks/bench_generate.py --model bfm-sized     # ~50k-vertex / ~100k-triangle model (BFM size)
    python benchmarks/bench_generate.py --model 01_MorphableModel.mat --landmarks lm68.txt ...  (see --help)

Both sides run in this one process on the same sampled parameters (``synthface.sample_params``, seed 0,
indices 0, 1, 2, …), at the same image size, produce colour + depth (+ mask) and write them to HDF5 with
the same lossless codec and one-sample chunks. synthface runs through ``synthface.generate.generate``
(its per-stage seconds come from ``stats=``); the baseline is a competent per-sample loop: one
``pyrender.OffscreenRenderer`` (EGL), one scene with an ``IntrinsicsCamera`` and a directional light,
and per sample a ``trimesh.Trimesh`` with per-vertex albedo colours added, rendered, removed and
written. Prints the machine, a summary table, both stage breakdowns and the ratio synthface/baseline.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc filters used by the default codec)
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import common

import synthface
from synthface.generate import GenerateJob, generate
from synthface.model import MorphableModel
from synthface.render import FaceRenderer, RenderSettings
from synthface.shards import CODECS, DEFAULT_CODEC

GL_FROM_CV = np.array([1.0, -1.0, -1.0], dtype=np.float32)
"""OpenCV camera axes (x right, y down, z forward) → OpenGL's (x right, y up, z backward)."""
SYNTHFACE_STAGES = ("sample", "geometry", "upload", "draw", "readback", "compose", "write", "commit")
TARGET_RATIO = 5.0
CHECKED_SAMPLES = 16  # masks compared between the two renderers


# ---------------------------------------------------------------- models


def bfm_sized_model(base: MorphableModel, k_identity: int = 80, k_albedo: int = 80) -> MorphableModel:
    """A MorphableModel of Basel-Face-Model size, built deterministically from ``base``.

    The mesh is subdivided twice (``trimesh.remesh.subdivide``: each triangle → 4) with every per-vertex
    array (mean shape, each basis component, albedo) interpolated as a vertex attribute, so it is the
    same face with ~16× the vertices. Original vertices keep their indices (landmarks stay valid).
    Identity and albedo bases are padded to Deep3DFaceRecon's K = 80 with normalized differences of
    existing components; the expression blendshapes are kept.
    """
    import trimesh

    v = base.n_vertices

    def per_vertex(basis: np.ndarray) -> np.ndarray:  # (K, V, 3) → (V, 3K)
        return basis.transpose(1, 0, 2).reshape(v, -1)

    parts = [base.mean_shape, base.albedo_mean, per_vertex(base.identity_basis),
             per_vertex(base.expression_basis), per_vertex(base.albedo_basis)]
    widths = np.cumsum([p.shape[1] for p in parts])[:-1]
    attrs = np.concatenate(parts, axis=1).astype(np.float32)
    verts, faces = np.asarray(base.mean_shape, dtype=np.float64), np.asarray(base.triangles)
    for _ in range(2):
        verts, faces, new = trimesh.remesh.subdivide(verts, faces, vertex_attributes={"a": attrs})
        attrs = new["a"]
    n = len(verts)
    mean, albedo_mean, id_b, ex_b, alb_b = np.split(attrs, widths, axis=1)

    def basis(flat: np.ndarray) -> np.ndarray:  # (V', 3K) → (K, V', 3)
        return np.ascontiguousarray(flat.reshape(n, -1, 3).transpose(1, 0, 2), dtype=np.float32)

    def pad(b: np.ndarray, k: int) -> np.ndarray:  # extra component j: (b[a] - b[c]) / √2, a ≠ c
        have = b.shape[0]
        if have < 2 or have >= k:
            return b
        extra = [(b[j % have] - b[(j + 1 + j // have) % have]) / math.sqrt(2.0) for j in range(k - have)]
        return np.concatenate([b, np.stack(extra)]).astype(np.float32)

    identity = pad(basis(id_b), k_identity)
    id_std = np.resize(np.asarray(base.identity_std, dtype=np.float32), identity.shape[0])
    arrays = [mean, identity, basis(ex_b), albedo_mean, pad(basis(alb_b), k_albedo), faces]
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).hexdigest()
    model = MorphableModel(
        name=f"{base.name}-subdivided2x-bfm-sized", mean_shape=np.ascontiguousarray(mean, dtype=np.float32),
        identity_basis=identity, identity_std=id_std, expression_basis=basis(ex_b),
        expression_kind=base.expression_kind, expression_names=base.expression_names,
        triangles=np.ascontiguousarray(faces, dtype=np.int32),
        albedo_mean=np.ascontiguousarray(albedo_mean, dtype=np.float32), albedo_basis=pad(basis(alb_b), k_albedo),
        landmark_indices=None if base.landmark_indices is None else np.array(base.landmark_indices),
        sha256=digest, source=f"benchmarks: {base.name} subdivided twice", metadata=dict(base.metadata),
    )
    if model.landmark_indices is not None:  # original vertices keep their positions and indices
        assert np.allclose(model.mean_shape[model.landmark_indices], base.mean_shape[base.landmark_indices])
    return model


def load_benchmark_model(spec: str, landmarks: str | None) -> MorphableModel:
    """``bundled``, ``bfm-sized`` or a model file path (``synthface.load_model``)."""
    if spec == "bundled":
        return synthface.load_model()
    if spec == "bfm-sized":
        return bfm_sized_model(synthface.load_model())
    return synthface.load_model(spec, landmarks=landmarks)


def describe(model: MorphableModel) -> str:
    return (f"{model.name}: V={model.n_vertices:,}, F={len(model.triangles):,}, K_id={model.n_identity}, "
            f"K_exp={model.n_expression} ({model.expression_kind}), K_alb={model.n_albedo}")


# ---------------------------------------------------------------- synthface


@dataclass
class Result:
    """One side of the comparison."""

    n: int
    seconds: float
    bytes_on_disk: int
    stages: dict[str, float] = field(default_factory=dict)
    """Seconds per stage, summed over the run (over workers for synthface)."""
    rss_mib: float = 0.0
    cpu_seconds: float = 0.0
    """User + system CPU time of this process and its finished children (all threads)."""

    @property
    def per_second(self) -> float:
        return self.n / self.seconds


def cpu_time() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def run_synthface(model: MorphableModel, n: int, size: int, codec: str, workers: int, device: str,
                  shard_size: int, out: Path) -> Result:
    """``synthface.generate`` end to end (plan, shards, fsync, sha256, manifest), timed from the outside."""
    job = GenerateJob(n=n, seed=0, shard_size=shard_size, config=synthface.SamplingConfig(image_size=size),
                      codec=codec)
    stats: dict[str, float] = {}
    cpu, start = cpu_time(), time.perf_counter()
    generate(out, job, model=model, workers=workers, device=device, stats=stats)
    seconds = time.perf_counter() - start
    size_on_disk = sum(p.stat().st_size for p in out.glob("shard-*.h5"))
    return Result(n, seconds, size_on_disk, stats, common.peak_rss_mib(), cpu_time() - cpu)


def profiled_render(model: MorphableModel, size: int, device: str, n: int = 256) -> dict[str, float]:
    """Renderer-only seconds per stage with ``profile=True`` (waits for the GL after each draw, so
    ``draw`` is the rasterization itself and ``readback`` only the copy)."""
    params = synthface.sample_params(model, seed=0, indices=range(n),
                                     config=synthface.SamplingConfig(image_size=size))
    with FaceRenderer(model, RenderSettings(image_size=size, profile=True), device=device) as renderer:
        renderer.render({k: v[:renderer.faces_per_draw] for k, v in params.items()})  # warm-up (shader JIT)
        renderer.timings.clear()
        renderer.render(params)
        return dict(renderer.timings)


# ---------------------------------------------------------------- the pyrender baseline


def run_baseline(model: MorphableModel, n: int, size: int, codec: str, path: Path, normals: str = "trimesh") -> Result:
    """The per-sample loop a user would write: pyrender over EGL + trimesh, one sample at a time, to HDF5.

    ``normals="trimesh"``: trimesh computes the vertex normals (its default, angle-weighted);
    ``"synthface"``: they come from ``synthface.vertex_normals`` and are handed to trimesh (cheaper).
    """
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    import pyrender
    import trimesh

    config = synthface.SamplingConfig(image_size=size)
    layout = synthface.param_layout(model)
    faces = np.asarray(model.triangles)
    stages = dict.fromkeys(("sample", "geometry", "mesh", "render", "write"), 0.0)
    cpu, start = cpu_time(), time.perf_counter()
    renderer = pyrender.OffscreenRenderer(size, size)
    scene = pyrender.Scene(bg_color=[0.0, 0.0, 0.0, 0.0], ambient_light=[0.3, 0.3, 0.3])
    camera = pyrender.IntrinsicsCamera(fx=1.0, fy=1.0, cx=size / 2, cy=size / 2, znear=10.0, zfar=1e5)
    scene.add(camera, pose=np.eye(4))  # at the origin, looking down -z: the OpenCV camera with y, z flipped
    scene.add(pyrender.DirectionalLight(color=np.ones(3), intensity=3.0), pose=np.eye(4))
    opts = CODECS[codec]()
    chunk = {"image": (1, size, size, 3), "depth": (1, size, size), "mask": (1, size, size)}
    dtypes = {"image": np.uint8, "depth": np.float32, "mask": np.uint8}
    try:
        with h5py.File(path, "w") as f:
            images = {k: f.create_dataset(k, (n, *c[1:]), dtypes[k], chunks=c, **opts) for k, c in chunk.items()}
            labels = {k: f.create_dataset(p.shard_path, (n, *p.shape), p.dtype) for k, p in layout.items()}
            for i in range(n):
                t0 = time.perf_counter()
                params = synthface.sample_params(model, seed=0, indices=[i], config=config)
                t1 = time.perf_counter()
                verts = synthface.camera_vertices(model, params)[0] * GL_FROM_CV
                albedo = model.albedo(params["albedo"])[0]
                extra = {"vertex_normals": synthface.vertex_normals(verts[None], faces)[0]} \
                    if normals == "synthface" else {}
                t2 = time.perf_counter()
                mesh = trimesh.Trimesh(verts, faces, vertex_colors=np.round(albedo * 255).astype(np.uint8),
                                       process=False, **extra)
                node = scene.add(pyrender.Mesh.from_trimesh(mesh, smooth=True))
                k = params["intrinsics"][0]
                camera.fx, camera.fy, camera.cx, camera.cy = (float(x) for x in (k[0, 0], k[1, 1], k[0, 2], k[1, 2]))
                t3 = time.perf_counter()
                colour, depth = renderer.render(scene)
                scene.remove_node(node)
                t4 = time.perf_counter()
                images["image"][i] = colour
                images["depth"][i] = depth
                images["mask"][i] = depth > 0
                for key, ds in labels.items():
                    ds[i] = params[key][0]
                t5 = time.perf_counter()
                for stage, seconds in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
                    stages[stage] += seconds
    finally:
        renderer.delete()
    seconds = time.perf_counter() - start
    return Result(n, seconds, path.stat().st_size, stages, common.peak_rss_mib(), cpu_time() - cpu)


def compare_masks(synth_dir: Path, baseline_file: Path, k: int) -> tuple[float, float, float, float]:
    """Mean and min IoU of the first ``k`` masks (synthface's vs the baseline's depth > 0), the baseline's
    mean covered fraction, and the median |depth difference| (mm) where both cover the pixel."""
    with h5py.File(synth_dir / "shard-000000.h5", "r") as a, h5py.File(baseline_file, "r") as b:
        k = min(k, len(a["mask"]), len(b["depth"]))
        sm, bd, sd = a["mask"][:k] > 0, b["depth"][:k], a["depth"][:k]
    bm = bd > 0
    inter = (sm & bm).sum(axis=(1, 2))
    union = np.maximum((sm | bm).sum(axis=(1, 2)), 1)
    iou = inter / union
    both = sm & bm
    dz = float(np.median(np.abs(sd[both] - bd[both]))) if both.any() else float("nan")
    return float(iou.mean()), float(iou.min()), float(bm.mean()), dz


# ---------------------------------------------------------------- report


def stage_table(title: str, stages: dict[str, float], n: int, wall: float, note: str = "") -> None:
    total = sum(stages.values())
    print(f"\n{title}{note}")
    print(f"  {'stage':<12} {'ms/sample':>10} {'share':>7}")
    for stage, seconds in stages.items():
        print(f"  {stage:<12} {1000 * seconds / n:>10.3f} {100 * seconds / max(total, 1e-12):>6.1f}%")
    print(f"  {'sum':<12} {1000 * total / n:>10.3f}   (wall {1000 * wall / n:.3f} ms/sample)")


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def merged(results: list[Result]) -> Result:
    """All repeats as one run (stage seconds summed); peak RSS is the process's high-water mark."""
    stages: dict[str, float] = {}
    for r in results:
        for k, v in r.stages.items():
            stages[k] = stages.get(k, 0.0) + v
    return Result(sum(r.n for r in results), sum(r.seconds for r in results), results[0].bytes_on_disk * len(results),
                  stages, max(r.rss_mib for r in results), sum(r.cpu_seconds for r in results))


def spread(values: list[float], fmt: str = ".1f") -> str:
    """Median, and min–max when there are several values."""
    med = f"{float(np.median(values)):{fmt}}"
    return med if len(values) == 1 else f"{med} ({min(values):{fmt}}–{max(values):{fmt}})"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="synthface samples per repeat (default 1000)")
    ap.add_argument("--baseline-n", type=int, default=200, help="pyrender baseline samples per repeat (default 200)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="synthface/baseline pairs, run alternately; medians are reported (default 3)")
    ap.add_argument("--size", type=int, default=200, help="image width = height (default 200)")
    ap.add_argument("--model", default="bundled", help="bundled | bfm-sized | PATH to a model file")
    ap.add_argument("--landmarks", default=None, help="ibug-68 landmark file for a --model PATH without them")
    ap.add_argument("--workers", type=int, default=1, help="synthface worker processes (default 1)")
    ap.add_argument("--shard-size", type=int, default=None,
                    help="synthface shard size (default: n, or n/workers rounded up to 64 so every worker has one)")
    ap.add_argument("--device", default="cpu", help="synthface geometry device: cpu | cuda | auto (default cpu)")
    ap.add_argument("--codec", default=DEFAULT_CODEC, choices=list(CODECS), help="codec for both sides")
    ap.add_argument("--baseline-normals", choices=("trimesh", "synthface"), default="trimesh",
                    help="who computes the baseline's vertex normals (default trimesh, as from_trimesh does)")
    ap.add_argument("--skip-baseline", action="store_true", help="time synthface only")
    ap.add_argument("--out-dir", type=Path, default=None, help="where to write (default: a temporary dir)")
    args = ap.parse_args(argv)
    if args.baseline_n > args.n:
        ap.error("--baseline-n must not exceed --n (the baseline renders a prefix of synthface's samples)")
    if min(args.n, args.baseline_n, args.repeat, args.workers) < 1:
        ap.error("--n, --baseline-n, --repeat and --workers must be at least 1")
    shard_size = args.shard_size or (args.n if args.workers == 1 else 64 * -(-args.n // (64 * args.workers)))

    info = common.machine_info()
    info["load avg"] = load_average()
    common.print_machine(info)
    model = load_benchmark_model(args.model, args.landmarks)
    print(f"# model        {describe(model)}")
    print(f"# run          {args.size}x{args.size}, codec {args.codec}; synthface n={args.n} (workers {args.workers}, "
          f"shard size {shard_size}, device {args.device}); baseline n={args.baseline_n} (vertex normals by "
          f"{args.baseline_normals}); {args.repeat} alternating repeats")

    synth_runs: list[Result] = []
    base_runs: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench_generate-") as tmp:
        root = args.out_dir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        for r in range(args.repeat):
            synth_dir, base_file = root / f"synthface-{r}", root / f"baseline-{r}.h5"
            if synth_dir.exists() and any(synth_dir.iterdir()):
                ap.error(f"{synth_dir} is not empty; pass a fresh --out-dir")
            synth_runs.append(run_synthface(model, args.n, args.size, args.codec, args.workers, args.device,
                                            shard_size, synth_dir))
            if not args.skip_baseline:
                base_file.unlink(missing_ok=True)
                base_runs.append(run_baseline(model, args.baseline_n, args.size, args.codec, base_file,
                                              args.baseline_normals))
            if r == 0:
                with h5py.File(synth_dir / "shard-000000.h5", "r") as f:
                    count = len(f["image"])
                    parts = {k: f[k].id.get_storage_size() / count for k in ("image", "depth", "mask")}
                masks = None if args.skip_baseline else compare_masks(synth_dir, base_file, CHECKED_SAMPLES)
            if args.out_dir is None:  # keep the disk (and page cache) small between repeats
                shutil.rmtree(synth_dir)
                base_file.unlink(missing_ok=True)
        profile = profiled_render(model, args.size, args.device)

    synth = merged(synth_runs)
    base = merged(base_runs) if base_runs else None
    sps = [x.per_second for x in synth_runs]
    bps = [x.per_second for x in base_runs]

    def col(f: Any, results: list[Result]) -> str:
        return spread([f(x) for x in results]) if results else "-"

    rows = [
        ("samples per repeat", f"{args.n}", f"{args.baseline_n}" if base else "-"),
        ("samples/s (end to end)", spread(sps), col(lambda x: x.per_second, base_runs)),
        ("wall ms/sample", col(lambda x: 1000 / x.per_second, synth_runs), col(lambda x: 1000 / x.per_second,
                                                                                  base_runs)),
        ("CPU ms/sample", col(lambda x: 1000 * x.cpu_seconds / x.n, synth_runs),
         col(lambda x: 1000 * x.cpu_seconds / x.n, base_runs)),
        ("bytes/sample on disk", f"{synth_runs[0].bytes_on_disk / args.n:,.0f}",
         f"{base_runs[0].bytes_on_disk / args.baseline_n:,.0f}" if base else "-"),
        ("peak RSS MiB (process)", f"{synth.rss_mib:.0f}", f"{base.rss_mib:.0f}" if base else "-"),
    ]
    w = max(len(r[1]) for r in rows) + 2
    print(f"\n{'':<24} {'synthface':>{w}} {'pyrender baseline':>{max(w, 18)}}")
    for name, a, b in rows:
        print(f"{name:<24} {a:>{w}} {b:>{max(w, 18)}}")
    print("(median over repeats, min–max in brackets; peak RSS of the baseline column is the process's, after both)")
    if base is not None and masks is not None:
        ratios = [a / b for a, b in zip(sps, bps, strict=True)]
        ratio = float(np.median(ratios))
        cpu_ratio = (base.cpu_seconds / base.n) / (synth.cpu_seconds / synth.n)
        verdict = "meets" if ratio >= TARGET_RATIO else "is BELOW"
        print(f"\nratio synthface / baseline, samples/s: {spread(ratios, '.2f')}x per adjacent pair "
              f"-> {ratio:.2f}x {verdict} the {TARGET_RATIO:g}x target; by CPU time per sample: {cpu_ratio:.2f}x")
        iou_mean, iou_min, covered, dz = masks
        print(f"sanity: first {min(CHECKED_SAMPLES, args.baseline_n)} samples, IoU(synthface mask, baseline depth>0) "
              f"mean {iou_mean:.3f}, min {iou_min:.3f}; baseline covers {100 * covered:.1f}% of pixels; "
              f"median |depth difference| {dz:.3f} mm")
    workers_note = f" — seconds summed over {args.workers} workers" if args.workers > 1 else ""
    stage_table("synthface stages, generate(stats=...) (draw does not wait for the GL: some of its work "
                "lands in readback)", {s: synth.stages.get(s, 0.0) for s in SYNTHFACE_STAGES}, synth.n,
                synth.seconds, workers_note)
    stage_table("synthface renderer alone, RenderSettings(profile=True), 256 samples (waits for the GL after "
                "each draw)", profile, 256, sum(profile.values()))
    if base is not None:
        stage_table("pyrender baseline stages", base.stages, base.n, base.seconds)
    print("\nsynthface bytes/sample by dataset: " + ", ".join(f"{k} {v:,.0f}" for k, v in parts.items())
          + f"; the whole shard {synth_runs[0].bytes_on_disk / args.n:,.0f}")
    print(f"# load avg     {load_average()} (after)")


if __name__ == "__main__":
    main()
