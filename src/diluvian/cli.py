"""Command line interface: argument parsing only.

Each subcommand's work is one library function; ``main`` maps
:class:`~diluvian.errors.DiluvianError` to one line on stderr and exit code 2
(with the traceback only under ``-l DEBUG``). Heavy modules (torch, h5py) are
imported inside the handlers so that ``diluvian -h`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable, Sequence

from .errors import DiluvianError

log = logging.getLogger("diluvian")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


# --------------------------------------------------------------------------- shared pieces


def _common_parser() -> argparse.ArgumentParser:
    """Flags shared by every subcommand (the original's common arguments)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "-c", "--config-file", action="append", dest="config_files", default=[], metavar="CONFIG_FILES",
        help="Configuration files to use. For defaults, see `diluvian/conf/default.toml`. Values are "
             "overwritten in the order provided, on top of the defaults.",
    )
    p.add_argument(
        "-cd", action="append_const", dest="config_files", const="default",
        help="Add the default configuration file to the chain of configuration files (at this position: "
             "it resets every key to its default). Configs always start from the defaults, so this is "
             "only needed to undo earlier -c files.",
    )
    p.add_argument("-m", "--model-file", dest="model_file", default=None,
                   help="Existing network model file to use for prediction or continued training.")
    p.add_argument("-v", "--volume-file", action="append", dest="volume_files", default=[],
                   help="Volume configuration files ([[dataset]] entries). Values are overwritten in the "
                        "order provided.")
    p.add_argument("--no-in-memory", action="store_false", dest="in_memory", default=True,
                   help="Do not preload entire volumes into memory.")
    p.add_argument("-rs", "--random-seed", dest="random_seed", type=int, default=None,
                   help="Seed for initializing the Python, NumPy and torch random generators. Overrides any "
                        "seed specified in configuration files (0 is a valid seed).")
    p.add_argument("-l", "--log", dest="log_level", choices=LOG_LEVELS, default=None,
                   help="Set the logging level.")
    return p


def load_cli_config(args: argparse.Namespace):
    """The effective config: defaults, then ``-c`` files in order, then ``-rs``."""
    from .config import load_config

    overrides = {"random_seed": args.random_seed} if args.random_seed is not None else None
    return load_config(args.config_files, overrides=overrides)


def require_volumes(args: argparse.Namespace) -> dict:
    """Load the ``-v`` dataset TOMLs; an error when none was given."""
    from .errors import ConfigError
    from .volumes import load_volumes

    if not args.volume_files:
        raise ConfigError("no volumes: give one or more dataset TOML files with -v/--volume-file")
    return load_volumes(args.volume_files, in_memory=args.in_memory)


# --------------------------------------------------------------------------- subcommands


def _cmd_check_config(args: argparse.Namespace) -> int:
    from .config import config_to_toml, format_config_value, get_config_value

    cfg = load_cli_config(args)
    if args.config_property:
        print(format_config_value(get_config_value(cfg, args.config_property)))
    else:
        sys.stdout.write(config_to_toml(cfg))
    return 0


def _add_check_config(sub, common) -> None:
    p = sub.add_parser("check-config", parents=[common], help="Check a configuration value.",
                       description="Print the effective configuration as TOML (which loads back to the same "
                                   "config), or one value.")
    p.add_argument("config_property", nargs="?", default=None,
                   help="Name of the property to show, e.g., `training.batch_size`.")
    p.set_defaults(func=_cmd_check_config)


def _cmd_synthesize(args: argparse.Namespace) -> int:
    from .synthetic import write_synthetic_hdf5

    write_synthetic_hdf5(args.output_file, shape=tuple(args.shape), seed=args.seed,
                         resolution=tuple(args.resolution))
    print(f"wrote {args.output_file}")
    return 0


def _add_synthesize(sub, common) -> None:
    p = sub.add_parser("synthesize", parents=[common], help="Write a synthetic EM volume with ground truth.",
                       description="Write an EM-like synthetic volume with dense neuron ground truth to an HDF5 "
                                   "file (volumes/raw, volumes/labels/neuron_ids, resolution attribute).")
    p.add_argument("output_file", help="HDF5 file to write.")
    p.add_argument("--shape", type=int, nargs=3, default=[64, 128, 128], metavar=("Z", "Y", "X"),
                   help="Volume shape in voxels (default: 64 128 128).")
    p.add_argument("--seed", type=int, default=0, help="Random seed (the volume is deterministic for a seed).")
    p.add_argument("--resolution", type=float, nargs=3, default=[10.0, 10.0, 10.0], metavar=("Z", "Y", "X"),
                   help="Resolution in nm (default: 10 10 10).")
    p.set_defaults(func=_cmd_synthesize)


# Subcommand registry, in the order `diluvian -h` lists them. Each entry adds one
# subparser whose `func` default is its handler.
SUBCOMMANDS: list[Callable] = [
    _add_check_config,
    _add_synthesize,
]


def make_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="diluvian",
                                     description="Train or run flood-filling networks on EM data.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    common = _common_parser()
    for add in SUBCOMMANDS:
        add(sub, common)
    return parser


def _setup_logging(level: str | None) -> None:
    logging.basicConfig(level=getattr(logging, level or "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``diluvian`` console script; returns the exit code."""
    parser = make_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)
    try:
        return int(args.func(args) or 0)
    except DiluvianError as e:
        if args.log_level == "DEBUG":
            log.exception("error")
        print(f"diluvian {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"diluvian {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
