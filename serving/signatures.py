"""trainers/manifest.py's verify and sign as a command of the serving environment.

The pipeline's environment cannot import OpenSSF model-signing: it pins urllib3 1.26 (TFX / KFP),
and model-signing imports sigstore, whose tuf 7 needs urllib3 2 (ImportError: BaseHTTPResponse).
The serving environment has model-signing with what it needs (serving/requirements.lock), so
`serve` verifies a version's files here, in a child process, before it starts MLServer. Keys
come on stdin, never on the command line.

    python -m serving.signatures verify SIGNED_DIR --what "mnist-digits version 3" < public.pem
    python -m serving.signatures sign SIGNED_DIR < private.pem
exit status 0, or 1 with one line on stderr naming what does not match.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    from trainers import manifest

    parser = argparse.ArgumentParser(prog="python -m serving.signatures", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("verify", "sign"))
    parser.add_argument("folder", help="the signed folder (manifest.sig beside it)")
    parser.add_argument("--what", default="the model", help="how the one-line error names it")
    args = parser.parse_args(argv)
    key = sys.stdin.read()
    try:
        if args.action == "verify":
            print(json.dumps(manifest.verify(args.folder, key, args.what)))
        else:
            print(manifest.sign(args.folder, key))
    except manifest.ManifestError as e:
        print(str(e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
