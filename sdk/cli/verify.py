"""``edgesentry verify BUNDLE --trusted-keys KEY.pub ...``: is this bundle signed by a trusted key,
and unchanged since?

The signature is verified before any other file of the bundle is parsed (only hashed); then the
bundle is opened and every sha256 of ``meta.json`` compared with the signed one. A changed, added
or missing file, an untrusted or revoked key, or an unsigned bundle fails with one line naming it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgesentry.cli._args import add_trust_args, trust_policy

HELP = "verify a bundle's signature against trusted keys (and its files against the signature)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help="bundle directory to verify")
    add_trust_args(parser)
    parser.add_argument("--json", action="store_true", help="print the verification as JSON")


def run(args: argparse.Namespace) -> int:
    from edgesentry.bundle import Bundle
    from edgesentry.errors import ConfigError
    from edgesentry.signing import ENV_CONFIG, ENV_TRUSTED, short

    policy = trust_policy(args)
    if policy is None:
        raise ConfigError(f"no trusted keys: pass --trusted-keys KEY.pub ... (or set ${ENV_TRUSTED} / ${ENV_CONFIG})")
    bundle = Bundle.open(args.bundle, trust=policy, signature=args.signature)
    v = bundle.signature
    if args.json:
        print(json.dumps({"bundle": str(bundle.path), "family": bundle.family, "state": "verified",
                          "signer": v.signer, "key": str(v.key), "signature": str(v.signature),
                          "files": sorted(v.digests)}, indent=2))
    else:
        print(f"verified {bundle.path} ({bundle.family}): signed by {short(v.signer)} ({v.key}); "
              f"{len(v.digests)} file{'s' * (len(v.digests) != 1)} match the signature and meta.json")
    return 0
