"""``edgesentry enroll BUNDLE GALLERY LABEL CLIPS...``: add a class (or shots) to an MDMF gallery."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "enrol a few-shot action class from example clips into a gallery file (mdmf)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edgesentry.cli._args import add_backend_args, add_kernel_args

    parser.add_argument("bundle", help="mdmf bundle directory (edgesentry convert mdmf ...)")
    parser.add_argument("gallery", help="gallery .npz (created if missing)")
    parser.add_argument("label", help="class label, e.g. 'pour water'")
    parser.add_argument("clips", nargs="+",
                        help="example clips: PATH or PATH@START:END (fractions of the clip), frame features "
                             "[T, D] or [K, T, D] in .npy files, folders or quoted globs of them")
    parser.add_argument("--prompt", default=None, help="class prompt text (default: the bundle's template)")
    parser.add_argument("--embedding", default=None, help=".npy text embedding [D] to use instead of the text tower")
    parser.add_argument("--append", action="store_true", help="add the clips as shots of an enrolled label")
    add_backend_args(parser)
    add_kernel_args(parser)


def run(args: argparse.Namespace) -> int:
    import edgesentry
    from edgesentry.cli._args import family_of_bundle
    from edgesentry.cli.families.mdmf import clip_arguments
    from edgesentry.errors import BundleError
    from edgesentry.io.files import read_npy

    family_of_bundle(args.bundle, "mdmf", command="enroll")
    det = edgesentry.load(args.bundle, backend=args.backend, kernels=args.kernels)
    clips = clip_arguments(args.clips)
    path = Path(args.gallery)
    gallery = det.load_gallery(path) if path.exists() else det.gallery()
    if args.append:
        for clip in clips:
            gallery.add_shot(args.label, clip)
    else:
        prompt = read_npy(args.embedding) if args.embedding else args.prompt
        gallery.enroll(args.label, clips, prompt=prompt)
    gallery.save(path)
    again = det.load_gallery(path)  # what was written loads, with every class and shot
    if [(k, again.shots(k)) for k in again.labels] != [(k, gallery.shots(k)) for k in gallery.labels]:
        raise BundleError(f"{path} does not load with the classes written")
    shots = ", ".join(f"{k} ({gallery.shots(k)})" for k in gallery.labels)
    print(f"{path}: {len(gallery)} classes: {shots}")
    return 0
