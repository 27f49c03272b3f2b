"""``edgesentry sign BUNDLE --key KEY.pem``: sign every file of a bundle (OpenSSF model signing).

The bundle is opened first (every sha256 of ``meta.json`` checked), so a corrupt bundle is not
signed; the signature (``BUNDLE/bundle.sig`` unless ``--signature``) covers every file of the
directory, engine plans and precision variants included, and is verified back with the key's
public half before the verb says ``done``. Make a key pair with OpenSSL::

    openssl ecparam -name prime256v1 -genkey -noout -out owner.pem
    openssl ec -in owner.pem -pubout -out owner.pub
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "sign every file of a bundle with an EC private key (OpenSSF model signing format)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help="bundle directory to sign")
    parser.add_argument("--key", required=True, metavar="KEY.pem",
                        help="EC private key (PEM; P-256, P-384 or P-521)")
    parser.add_argument("--signature", default=None, metavar="PATH",
                        help="where to write the signature (default: BUNDLE/bundle.sig, which travels with the bundle)")
    parser.add_argument("--password-file", default=None, metavar="FILE",
                        help="file whose first line is the key's password (default: the key is not encrypted)")


def run(args: argparse.Namespace) -> int:
    from edgesentry.bundle import Bundle
    from edgesentry.errors import ConfigError
    from edgesentry.io.paths import read_text_bounded
    from edgesentry.signing import short, sign_bundle

    password = None
    if args.password_file is not None:
        if not Path(args.password_file).is_file():
            raise ConfigError(f"--password-file {args.password_file!r} does not exist")
        text = read_text_bounded(args.password_file, limit=4096, what="key password file", error=ConfigError)
        password = (text.splitlines() or [""])[0].encode()
    bundle = Bundle.open(args.bundle)  # its own sha256s hold: a corrupt bundle is not signed
    done = sign_bundle(bundle.path, args.key, signature=args.signature, password=password)
    print(f"signed {bundle.path} ({bundle.family}, {len(done.digests)} files) with {short(done.signer)} "
          f"-> {done.signature}; checked: it verifies with the key's public half")
    return 0
