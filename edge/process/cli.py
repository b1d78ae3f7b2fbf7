"""`cosedge`: commands about the edge itself, beside `twistd cosedge` that runs it.

    cosedge check-config PATH     like `nginx -t`: every problem on its own line, exit 1;
                                  or one line saying the file is fine, exit 0
    cosedge --version

`check-config` runs the same validation as start-up and as a SIGHUP reload (config keys,
ISP tables, IP-literal origins, the data folder), without creating or changing anything.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from edge import __version__
from edge.config import ConfigError, EdgeConfig, load_config


def check_config(path: str) -> tuple[EdgeConfig | None, list[str]]:
    """The config and every problem found with it, as the lines an operator reads."""
    from edge.process.tap import build_policy

    try:
        config = load_config(path)
    except ConfigError as e:
        return None, [str(p) for p in e.problems]
    problems: list[str] = []
    try:
        build_policy(config)
    except ConfigError as e:
        problems += [str(p) for p in e.problems]
    problem = _data_dir_problem(config.data_dir)
    if problem:
        problems.append(str(config.error("data_dir", problem)))
    return config, problems


def _data_dir_problem(data_dir: Path) -> str | None:
    """Whether start-up could prepare the data folder, asked without creating it."""
    existing = Path(os.path.abspath(data_dir))
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        target = "" if existing == Path(os.path.abspath(data_dir)) else f" to create {data_dir}"
        return f"{existing} is not writable{target}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cosedge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"cosedge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check-config", help="validate a config file, like nginx -t")
    check.add_argument("path")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    config, problems = check_config(args.path)
    for line in problems:
        print(line)
    if problems:
        return 1
    assert config is not None
    print(
        f"{args.path}: configuration is valid: {len(config.buckets)} bucket(s), "
        f"{len(config.credentials)} key pair(s), data in {config.data_dir}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
