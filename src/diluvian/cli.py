"""Command line interface: argument parsing only.

(Over 600 lines: one parser and one thin ``_cmd_*`` function per subcommand, eleven of them.)

Each subcommand's work is one library function; ``main`` maps
:class:`~diluvian.errors.DiluvianError` to one line on stderr and exit code 2
(with the traceback only under ``-l DEBUG``). Heavy modules (torch, h5py) are
imported inside the handlers so that ``diluvian -h`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import sys
from pathlib import Path
from typing import Callable, Iterator, Sequence

from .errors import DiluvianError

log = logging.getLogger("diluvian")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

#: Largest --move-batch-size: a batch of that many 33³ FOVs already takes ~19 GB of image and mask.
MAX_MOVE_BATCH = 65536


# --------------------------------------------------------------------------- shared pieces


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 (any free port) to 65535, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an int >= 0, got {text!r}")
    return value


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


def require_volumes(args: argparse.Namespace, cfg=None) -> dict:
    """Load the ``-v`` dataset TOMLs (``cfg``'s ``[volume] nonfinite`` for NaN/Inf images); an error when none was given."""
    from .errors import ConfigError
    from .volumes import load_volumes

    if not args.volume_files:
        raise ConfigError("no volumes: give one or more dataset TOML files with -v/--volume-file")
    nonfinite = cfg.volume.nonfinite if cfg is not None else "error"
    return load_volumes(args.volume_files, in_memory=args.in_memory, nonfinite=nonfinite)


def check_cli_outputs(args: argparse.Namespace, outputs, extra_inputs=()) -> None:
    """Check every output path of a command before any work (:func:`diluvian.outputs.check_outputs`).

    The inputs no output may overwrite: the ``-v`` dataset TOMLs and the files they name, the ``-c``
    files, the ``-m`` model and ``extra_inputs``.
    """
    from .outputs import check_outputs, dataset_files

    configs = [p for p in args.config_files if Path(p).is_file()]
    inputs = [*dataset_files(args.volume_files), *configs, args.model_file, *extra_inputs]
    check_outputs(outputs, inputs)


def _add_server_args(p: argparse.ArgumentParser, note: str = "") -> None:
    """``--bind-address``, ``--port`` and ``--open``: where a neuroglancer viewer is served (view, fill, train).

    ``note`` is appended to each help text (e.g. " With --viewer only.").
    """
    p.add_argument("--bind-address", default="127.0.0.1",
                   help="Address the viewer's web server listens on (default: 127.0.0.1; 0.0.0.0 for all)." + note)
    p.add_argument("--port", type=_port, default=0,
                   help="Port of the viewer's web server (default: 0, any free port)." + note)
    p.add_argument("--open", action="store_true", default=False,
                   help="Open the viewer in a web browser, when one is available." + note)


def _serve_viewer(viewer, args: argparse.Namespace) -> None:
    """Print the viewer's URL (one line on stdout), open it with ``--open``, serve until Ctrl-C, stop the server."""
    from .view import server

    url = viewer.get_viewer_url()
    print(url, flush=True)
    if args.open:
        server.open_in_browser(url)
    print("serving; press Ctrl-C to stop", file=sys.stderr, flush=True)
    server.wait_for_interrupt()
    server.stop_server()


def _check_viewer_args(args: argparse.Namespace) -> None:
    """``--bind-address``, ``--port`` and ``--open`` of fill and train only mean something with ``--viewer``."""
    from .errors import ConfigError

    if not args.viewer and (args.open or args.port != 0 or args.bind_address != "127.0.0.1"):
        raise ConfigError("--bind-address, --port and --open apply to --viewer only")


@contextlib.contextmanager
def _viewer_server(args: argparse.Namespace) -> Iterator[None]:
    """With ``--viewer``, bind the web server on entry (a busy port fails before a long run) and stop it
    when the block fails; without, do nothing."""
    if not args.viewer:
        yield
        return
    from .view import server

    server.start_server(args.bind_address, args.port)
    try:
        yield
    except BaseException:
        server.stop_server()
        raise


# --------------------------------------------------------------------------- subcommands


def _cmd_check_config(args: argparse.Namespace) -> int:
    from .config import config_to_toml, format_config_value, get_config_value

    cfg = load_cli_config(args)
    if args.config_property:
        value = get_config_value(cfg, args.config_property)
        print(format_config_value(value, args.config_property.rsplit(".", 1)[-1]))
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

    check_cli_outputs(args, [args.output_file])
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


def _cmd_view(args: argparse.Namespace) -> int:
    from .view import snapshot_volumes, view_volumes

    from .errors import ConfigError

    if args.point is not None and args.snapshot is None:
        raise ConfigError("--point applies to --snapshot only")
    cfg = load_cli_config(args)
    if args.snapshot is not None:
        import re

        from .outputs import dataset_names
        from .view.snapshots import snapshot_path

        try:
            names = [n for n in dataset_names(args.volume_files) if re.match(args.volume_name_regex, n)]
        except re.error:  # reported by the viewer's own volume selection
            names = []
        if len(names) > 1:
            names = [n for n in names if n != args.segmentation]
        check_cli_outputs(args, sorted({snapshot_path(args.snapshot, n) for n in names}))
    volumes = require_volumes(args, cfg)
    if args.snapshot is not None:
        for path in snapshot_volumes(volumes, args.snapshot, args.volume_name_regex, point=args.point,
                                     segmentation=args.segmentation, partition_volumes=args.partition_volumes,
                                     config=cfg):
            print(f"wrote {path}")
        return 0
    viewer = view_volumes(volumes, args.volume_name_regex, segmentation=args.segmentation,
                          partition_volumes=args.partition_volumes, config=cfg, bind_address=args.bind_address,
                          port=args.port, wait=False)
    _serve_viewer(viewer, args)
    return 0


def _add_view(sub, common) -> None:
    p = sub.add_parser("view", parents=[common], help="View a set of co-registered volumes in neuroglancer.",
                       description="Serve the image, labels and mask of the matching volumes in one neuroglancer "
                                   "viewer: prints its URL and serves until Ctrl-C. With --snapshot, write a PNG of "
                                   "three orthogonal slices instead.")
    p.add_argument("volume_name_regex", nargs="?", default=".",
                   help="Regex to filter which volumes of those defined in the volume configuration should be "
                        "loaded (matched at the start of the name; default: all).")
    p.add_argument("--partition-volumes", action="store_true", dest="partition_volumes", default=False,
                   help="Partition volumes and view centered at the validation partitions.")
    p.add_argument("--segmentation", default=None, metavar="NAME",
                   help="Volume whose labels to show over the matching volume, e.g. the '<volume> segmentation' "
                        "entry written by fill.")
    _add_server_args(p)
    p.add_argument("--snapshot", default=None, metavar="OUT.png",
                   help="Write a PNG of XY, ZY and XZ slices (segmentation overlaid) instead of serving; "
                        "use {volume} in the name when several volumes match.")
    p.add_argument("--point", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
                   help="Voxel the --snapshot slices go through (default: the centre).")
    p.set_defaults(func=_cmd_view)


def _fill_common_args(p: argparse.ArgumentParser) -> None:
    """Flags shared by fill and sparse-fill."""
    p.add_argument("--partition-volumes", action="store_true", dest="partition_volumes", default=False,
                   help="Partition volumes and only fill the validation partition.")
    p.add_argument("--no-bias", action="store_false", dest="bias", default=None,
                   help="Overwrite prediction mask at the end of each field of view inference rather than using "
                        "the anti-merge bias update.")
    p.add_argument("--move-batch-size", dest="move_batch_size", type=int, default=None,
                   help="Maximum number of fill moves to process in each prediction batch. Dense fill batches "
                        "moves across objects, one move per object per batch, which gives the same result as "
                        "filling one object at a time (default: 32 on CPU, 256 on CUDA); sparse-fill batches "
                        "across its regions likewise). Overrides [fill] move_batch_size.")
    p.add_argument("--max-moves", dest="max_moves", type=int, default=None,
                   help="Cancel filling after this many moves.")
    p.add_argument("--moves-per-step", dest="moves_per_step", type=int, default=None,
                   help="Moves of one region per prediction batch (1: one move at a time; more: fewer, fuller "
                        "batches, another segmentation). Overrides [fill] moves_per_step.")
    p.add_argument("--remask-interval", dest="remask_interval", type=int, default=None,
                   help="Interval in moves to reset filling region mask based on the seeded connected component.")


def _cmd_fill(args: argparse.Namespace) -> int:
    from .config import seed_everything
    from .fill.run import fill_volumes_to_files, load_fill_model, prepare_volumes

    cli_cfg = load_cli_config(args)
    _check_fill_args(args)
    _check_viewer_args(args)
    if args.model_file is None:
        from .errors import ConfigError

        raise ConfigError("fill needs a trained model: give it with -m/--model-file")
    if _blockwise_args(args):
        return _fill_blockwise(args, cli_cfg)
    from .fill.run import fill_output_paths
    from .outputs import dataset_names

    outputs = fill_output_paths(args.segmentation_output_file, dataset_names(args.volume_files))
    checkpoints = {os.path.abspath(p) for p in outputs if p.name.endswith("_checkpoint.toml")}
    resume = [r for r in (args.resume_filename.replace("{volume}", n) for n in dataset_names(args.volume_files))
              if os.path.abspath(r) not in checkpoints] if args.resume_filename else []  # its own checkpoint: fine
    check_cli_outputs(args, outputs, resume)
    rng = seed_everything(cli_cfg.random_seed)
    model, cfg = load_fill_model(args.model_file, _with_fill_flags(cli_cfg, args), args.config_files)
    volumes = prepare_volumes(require_volumes(args, cfg), cfg, args.partition_volumes)
    with _viewer_server(args):
        results = fill_volumes_to_files(
            volumes, model, cfg, args.segmentation_output_file, model_file=args.model_file,
            resume_pattern=args.resume_filename, rng=rng, progress=sys.stderr.isatty(), in_memory=args.in_memory)
        for name, result in results.items():
            print(f"{name}: {result.stats.summary()}", flush=True)
        if args.viewer:
            from .view import show_fill_results

            viewer = show_fill_results(volumes, results, bind_address=args.bind_address, port=args.port)
            _serve_viewer(viewer, args)
    return 0


def _blockwise_args(args: argparse.Namespace) -> bool:
    """True with ``--blockwise``; its flags without it, or flags it cannot take, are errors."""
    from .errors import ConfigError

    own = [f for f, v in (("--scheduler", args.scheduler), ("--workers", args.workers),
                          ("--block-shape", args.block_shape), ("--overwrite", args.overwrite))
           if v not in (None, False)]
    if not args.blockwise:
        if own:
            raise ConfigError(f"{', '.join(own)}: only with --blockwise")
        return False
    other = [f for f, v in (("--viewer", args.viewer), ("--resume-file", args.resume_filename),
                            ("--max-bodies", args.max_bodies), ("--background-label-id", args.background_label_id))
             if v]
    if other:
        raise ConfigError(f"{', '.join(other)}: not with --blockwise (a blockwise fill resumes by itself: rerun it)")
    return True


def _fill_blockwise(args: argparse.Namespace, cli_cfg) -> int:
    from .fill.blockwise import fill_volumes_blockwise
    from .fill.run import load_fill_model

    _, cfg = load_fill_model(args.model_file, cli_cfg, args.config_files)
    results = fill_volumes_blockwise(
        args.volume_files, args.model_file, cfg, args.segmentation_output_file, partition=args.partition_volumes,
        scheduler=args.scheduler, workers=args.workers, block_shape=args.block_shape, overwrite=args.overwrite,
        progress=sys.stderr.isatty(), move_batch_size=args.move_batch_size, max_moves=args.max_moves,
        moves_per_step=args.moves_per_step, remask_interval=args.remask_interval, bias=args.bias,
        seed_generator=args.seed_generator, ordered_seeds=args.ordered_seeds, ignore_mask=args.ignore_mask,
        reject_early_termination=args.reject_early_termination)
    for name, result in results.items():
        print(f"{name}: {result.summary()} -> {result.toml}", flush=True)
    return 0


_FILL_FLAGS = ("move_batch_size", "moves_per_step", "max_moves", "remask_interval", "bias", "seed_generator",
               "ordered_seeds", "ignore_mask", "background_label_id", "max_bodies", "reject_early_termination",
               "checkpoint_interval")
"""Flags of fill / sparse-fill that override ``[fill]`` keys of the same name (None: not given)."""


def _with_fill_flags(cfg, args: argparse.Namespace):
    """``cfg`` with the ``[fill]`` keys that the command's flags set."""
    from .fill.state import with_fill_options

    return with_fill_options(cfg, **{k: getattr(args, k, None) for k in _FILL_FLAGS})


def _check_fill_args(args: argparse.Namespace) -> None:
    from .errors import DataError

    for flag, value, low in (("--move-batch-size", args.move_batch_size, 1), ("--max-moves", args.max_moves, 1),
                             ("--moves-per-step", args.moves_per_step, 1),
                             ("--remask-interval", args.remask_interval, 1),
                             ("--max-bodies", getattr(args, "max_bodies", None), 1),
                             ("--checkpoint-interval", getattr(args, "checkpoint_interval", None), 0)):
        if value is not None and value < low:
            raise DataError(f"{flag}: expected an int >= {low}, got {value}")
    if args.move_batch_size is not None and args.move_batch_size > MAX_MOVE_BATCH:
        raise DataError(f"--move-batch-size: expected an int <= {MAX_MOVE_BATCH} (a batch holds that many FOVs "
                        f"in memory), got {args.move_batch_size}")


def _add_fill(sub, common) -> None:
    p = sub.add_parser("fill", parents=[common], help="Use a trained network to densely segment a volume.",
                       description="Use a trained network to densely segment each volume: writes "
                                   "SEGMENTATION_OUTPUT_FILE.hdf5 (volumes/labels/neuron_ids, uint64, and "
                                   "volumes/labels/conflict_count) and SEGMENTATION_OUTPUT_FILE.toml (a dataset "
                                   "entry '<volume> segmentation' for -v). Progress is checkpointed to "
                                   "SEGMENTATION_OUTPUT_FILE_checkpoint.hdf5/.toml (also on Ctrl-C); continue with "
                                   "--resume-file. The model file's [model] and [network] settings are used.")
    _fill_common_args(p)
    # the names of config.SEED_GENERATOR_NAMES (tested; config is not imported here, to keep -h fast)
    p.add_argument("--seed-generator", dest="seed_generator", default=None, choices=("sobel", "membrane", "grid"),
                   help="Method to generate seed locations for flood filling (default: [fill] seed_generator, "
                        "sobel).")
    p.add_argument("--ordered-seeds", action="store_true", dest="ordered_seeds", default=None,
                   help="Do not shuffle order in which seeds are processed.")
    p.add_argument("--ignore-mask", action="store_true", dest="ignore_mask", default=None,
                   help="Ignore the mask channel when generating seeds. (A plain switch: the original took a "
                        "value here.)")
    p.add_argument("--background-label-id", dest="background_label_id", type=int, default=None,
                   help="Label ID to output for voxels not belonging to any filled body.")
    p.add_argument("--viewer", action="store_true", default=False,
                   help="Create a neuroglancer viewer for each volume after filling: once the outputs are written, "
                        "show every volume's image, ground-truth labels (when it has them), new segmentation and "
                        "conflict count in one viewer, print its URL and serve until Ctrl-C.")
    _add_server_args(p, " With --viewer only.")
    p.add_argument("--max-bodies", dest="max_bodies", type=int, default=None,
                   help="Cancel filling after this many bodies (only useful for diagnostics).")
    p.add_argument("--reject-early-termination", action="store_true", dest="reject_early_termination",
                   default=None, help="Reject seeds that terminate early, e.g., due to maximum move limits.")
    p.add_argument("--resume-file", dest="resume_filename", default=None,
                   help="Filename for the TOML configuration file of a segmented label volume from which to "
                        "resume filling (a checkpoint's _checkpoint.toml continues exactly where it stopped). "
                        "The configuration should only contain one dataset. May contain {volume}.")
    p.add_argument("--checkpoint-interval", dest="checkpoint_interval", type=int, default=None,
                   help="Write a checkpoint every this many bodies (default: [fill] checkpoint_interval, 50; 0: "
                        "only every [fill] checkpoint_minutes, 10, and on Ctrl-C). Checkpoints are removed once "
                        "the output is written.")
    g = p.add_argument_group("blockwise fill on Dask", "Cut each volume into blocks filled as Dask tasks; "
                             "write SEGMENTATION_OUTPUT_FILE.zarr (zarr v3, uint64, OME-Zarr 0.5) and .toml. "
                             "Rerunning the same command resumes: finished blocks are skipped.")
    g.add_argument("--blockwise", action="store_true", default=False,
                   help="Fill block by block on a Dask cluster (default: a local cluster, one worker per core).")
    g.add_argument("--block-shape", dest="block_shape", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
                   help="Write box of one block in voxels (default: [blockwise] block_shape); each block is "
                        "filled with a margin of half an FOV plus [blockwise] margin_moves moves around it.")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="Address of a running Dask scheduler (tcp://host:8786) instead of a local cluster.")
    g.add_argument("--workers", type=int, default=None,
                   help="Worker processes of the local cluster (default: the CPU cores; 0: no cluster, "
                        "every block in this process).")
    g.add_argument("--overwrite", action="store_true", default=False,
                   help="Replace an existing output instead of resuming it.")
    p.add_argument("segmentation_output_file",
                   help="Filename for the HDF5 segmentation output, without extension. Should contain "
                        "\"{volume}\", which will be substituted with the volume name for each respective "
                        "volume's bounds (required with more than one volume).")
    p.set_defaults(func=_cmd_fill)


def _cmd_sparse_fill(args: argparse.Namespace) -> int:
    from .config import seed_everything
    from .fill.run import load_fill_model, prepare_volumes
    from .fill.sparse import sparse_fill_to_files

    cli_cfg = load_cli_config(args)
    _check_fill_args(args)
    if args.model_file is None:
        from .errors import ConfigError

        raise ConfigError("sparse-fill needs a trained model: give it with -m/--model-file")
    if args.num_regions < 1:
        from .errors import DataError

        raise DataError(f"--num-regions: expected an int >= 1, got {args.num_regions}")
    from .outputs import dataset_names

    bounds = [args.bounds_input_file.replace("{volume}", n) for n in dataset_names(args.volume_files)] \
        if args.bounds_input_file else []
    check_cli_outputs(args, [args.output, str(Path(args.output).with_suffix(".csv"))], bounds)
    rng = seed_everything(cli_cfg.random_seed)
    model, cfg = load_fill_model(args.model_file, _with_fill_flags(cli_cfg, args), args.config_files)
    volumes = prepare_volumes(require_volumes(args, cfg), cfg, args.partition_volumes)
    interactive = args.interactive if args.interactive is not None else (sys.stdin.isatty() and sys.stdout.isatty())
    fc = cfg.fill
    summary = sparse_fill_to_files(
        volumes, model, cfg, args.output, bounds_pattern=args.bounds_input_file, num_regions=args.num_regions,
        bounds_num_moves=tuple(args.bounds_num_moves), augment=args.augment,
        move_batch_size=fc.move_batch_size or None, max_moves=fc.max_moves or None,
        remask_interval=fc.remask_interval or None, bias=fc.bias, rng=rng, interactive=interactive)
    print(summary)
    return 0


def _add_sparse_fill(sub, common) -> None:
    p = sub.add_parser("sparse-fill", parents=[common], help="Use a trained network to fill random regions in a volume.",
                       description="Fill single objects from the centres of subvolumes (random, or read with -bi), "
                                   "score them against the ground truth and write the image, target and prediction "
                                   "of every region to one HDF5 file plus a CSV table (volume, index, seed, "
                                   "label_id, f_score, moves, stop reason). Prints mean F-score and moves.")
    _fill_common_args(p)
    p.add_argument("--bounds-num-moves", dest="bounds_num_moves", type=int, nargs=3, default=[5, 5, 5],
                   metavar="BOUNDS_NUM_MOVES",
                   help="Number of moves in direction to size the subvolume bounds (default: 5 5 5).")
    p.add_argument("--augment", action="store_true", default=False,
                   help="Apply training augmentations to subvolumes before filling.")
    p.add_argument("-bi", "--bounds-input-file", dest="bounds_input_file", default=None,
                   help="Filename for bounds CSV input. Should contain \"{volume}\", which will be substituted "
                        "with the volume name for each respective volume's bounds.")
    p.add_argument("--num-regions", dest="num_regions", type=int, default=10,
                   help="Random subvolumes per volume when no -bi file is given (default: 10).")
    p.add_argument("-o", "--output", default="sparse_fill.h5",
                   help="HDF5 file for the regions (default: sparse_fill.h5); the CSV table goes next to it "
                        "with extension .csv.")
    p.add_argument("--interactive", action=argparse.BooleanOptionalAction, default=None,
                   help="Ask before each region (Enter: next, q: quit); default when stdin is a terminal.")
    p.set_defaults(func=_cmd_sparse_fill)


def _cmd_gen_subv_bounds(args: argparse.Namespace) -> int:
    from .config import seed_everything
    from .fill.sparse import write_subvolume_bounds
    from .outputs import dataset_names

    cfg = load_cli_config(args)
    if args.num_bounds < 1:
        from .errors import DataError

        raise DataError(f"num_bounds: expected an int >= 1, got {args.num_bounds}")
    check_cli_outputs(args, [args.bounds_output_file.replace("{volume}", n) for n in dataset_names(args.volume_files)])
    rng = seed_everything(cfg.random_seed)
    if args.model_file is not None:  # the model's FOV and move step size the subvolumes
        from .fill.run import load_fill_model

        cfg = load_fill_model(args.model_file, cfg, args.config_files)[1]
    volumes = require_volumes(args, cfg)
    for path in write_subvolume_bounds(volumes, cfg, args.bounds_output_file, args.num_bounds,
                                       bounds_num_moves=tuple(args.bounds_num_moves), rng=rng):
        print(f"wrote {path}")
    return 0


def _add_gen_subv_bounds(sub, common) -> None:
    p = sub.add_parser("gen-subv-bounds", parents=[common], help="Generate subvolume bounds.",
                       description="Draw random subvolume bounds (as training samples them) for each volume, "
                                   "downsampled to [volume] resolution, and write them to a CSV file per volume "
                                   "(start,stop,seed,label_id,label_margin), for sparse-fill -bi. The subvolume "
                                   "shape is input_fov + 2 * move_step * BOUNDS_NUM_MOVES, from [model] of the "
                                   "config, or of the model given with -m.")
    p.add_argument("bounds_output_file",
                   help="Filename for the CSV output. Should contain \"{volume}\", which will be substituted "
                        "with the volume name for each respective volume's bounds.")
    p.add_argument("num_bounds", type=int, help="Number of bounds to generate.")
    p.add_argument("--bounds-num-moves", dest="bounds_num_moves", type=int, nargs=3, default=[5, 5, 5],
                   metavar="BOUNDS_NUM_MOVES",
                   help="Number of moves in direction to size the subvolume bounds (default: 5 5 5).")
    p.set_defaults(func=_cmd_gen_subv_bounds)


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import seed_everything
    from .network import config_for_model_file
    from .training import train_network

    _check_viewer_args(args)
    cfg = load_cli_config(args)
    _check_train_outputs(args)
    if args.model_file is not None:
        cfg = config_for_model_file(cfg, args.model_file, args.config_files)
    rng = seed_everything(cfg.random_seed)
    volumes = require_volumes(args, cfg)
    with _viewer_server(args):
        result = train_network(cfg, volumes, args.model_output_filebase, model_file=args.model_file,
                               checkpoint_pattern=args.model_checkpoint_file, tensorboard=args.tensorboard,
                               early_restart=args.early_restart, rng=rng, max_minutes=args.max_minutes)
        print(result.summary(), flush=True)
        if len(result.candidates) > 1:  # [training] select_by = "dense_fill", and a choice to make
            from .selection import select_model

            print(select_model(result.candidates, volumes, cfg, result.model_file).summary(), flush=True)
        if args.viewer:
            from .sample_fill import fill_validation_sample
            from .view import show_training_sample

            s = fill_validation_sample(result.model_file, volumes)
            viewer = show_training_sample(s.image, s.mask_input, s.target, s.prediction, s.resolution,
                                          bind_address=args.bind_address, port=args.port)
            _serve_viewer(viewer, args)
    return 0


def _check_train_outputs(args: argparse.Namespace) -> None:
    """BASE.{pt,toml,csv,png}, a -mc checkpoint and BASE_logs/ (--tensorboard), before training starts."""
    from .outputs import check_output_dir

    base = args.model_output_filebase
    outputs = [base + ext for ext in (".pt", ".toml", ".csv", ".png")]
    if args.model_checkpoint_file:
        from .training.outputs import CSV_FIELDS, checkpoint_name

        # the fields of an epoch's row (training.loop._epoch_row), so a bad pattern fails before training
        fields = (*CSV_FIELDS[1:], "fov_per_s", "moves_per_subvolume", "val_moves")
        outputs.append(checkpoint_name(args.model_checkpoint_file, 1, dict.fromkeys(fields, 0.0)))
    check_cli_outputs(args, outputs)
    if args.tensorboard:
        check_output_dir(base + "_logs")


def _add_train(sub, common) -> None:
    p = sub.add_parser("train", parents=[common], help="Train a network from labeled volumes.",
                       description="Train a flood-filling network with moving fields of view on the training "
                                   "partitions of the volumes, validating on the validation partitions every epoch. "
                                   "Writes MODEL_OUTPUT_FILEBASE.toml (effective config), .pt (best model by "
                                   "val_subv_metric), .csv (per-epoch loss, val_loss, val_subv_metric, time) and "
                                   ".png (metric plot). With -m, training continues from that model (weights, "
                                   "optimizer state, epoch count) for total_epochs more epochs; its [network] and "
                                   "FOVs are used.")
    p.add_argument("-mo", "--model-output-filebase", dest="model_output_filebase", default="model_output",
                   help="Base filename for the best trained model and other output artifacts, such as metric plots "
                        "and configuration state (default: model_output).")
    p.add_argument("-mc", "--model-checkpoint-file", dest="model_checkpoint_file", default=None,
                   help="Filename for model checkpoints at every epoch. This is different than the model output "
                        "file; if provided, this model file is saved every epoch regardless of validation "
                        "performance. Can use Python format fields: {epoch} and the epoch's metrics, e.g. "
                        "'ckpt_{epoch:03d}_{val_subv_metric:.3f}.pt'.")
    p.add_argument("--early-restart", action="store_true", dest="early_restart", default=False,
                   help="If training is aborted early because an early abort metric criteria, restart training "
                        "with a new random seed.")
    p.add_argument("--max-minutes", type=_positive_float, default=None, dest="max_minutes",
                   help="Stop training after this many minutes of training steps (validation not counted); the "
                        "interrupted epoch is validated and kept like a full one.")
    p.add_argument("--tensorboard", action="store_true", default=False,
                   help="Output tensorboard log files while training (scalars and validation slices, in "
                        "MODEL_OUTPUT_FILEBASE_logs/).")
    p.add_argument("--viewer", action="store_true", default=False,
                   help="Create a neuroglancer viewer for a training sample at the end of training: the best model "
                        "fills the first validation subvolume, and its image, mask input, target and filled mask "
                        "are shown; prints the viewer's URL and serves until Ctrl-C.")
    _add_server_args(p, " With --viewer only.")
    p.set_defaults(func=_cmd_train)


def _cmd_validate(args: argparse.Namespace) -> int:
    import json

    from .config import seed_everything
    from .errors import ConfigError
    from .network import config_for_model_file
    from .training import validate_model
    from .util import atomic_path

    if args.model_file is None:
        raise ConfigError("validate needs a trained model: give it with -m/--model-file")
    cfg = config_for_model_file(load_cli_config(args), args.model_file, args.config_files)
    seed_everything(cfg.random_seed)
    if args.json_file is not None:
        check_cli_outputs(args, [args.json_file])
    result = validate_model(cfg, require_volumes(args, cfg), args.model_file)
    print(f"Metric: {result.metric}")
    print(f"All: {[round(v, 6) for v in result.per_subvolume]}")
    print(f"Loss: {result.loss}")
    if args.json_file is not None:
        with atomic_path(args.json_file, suffix=".json") as tmp:
            tmp.write_text(json.dumps({"metric": result.metric, "loss": result.loss,
                                       "per_subvolume": result.per_subvolume, "moves": result.moves,
                                       "metric_name": cfg.training.validation_metric.metric,
                                       "beta": cfg.training.validation_metric.beta}, indent=1) + "\n")
    return 0


def _add_validate(sub, common) -> None:
    p = sub.add_parser("validate", parents=[common], help="Run a model on validation data.",
                       description="Fill the fixed validation subvolumes of the volumes' validation partitions with "
                                   "a trained model (-m) as training validates, and print the mean per-subvolume "
                                   "metric ('Metric: <value>'), every subvolume's metric ('All: [...]') and the "
                                   "validation loss. The model file's [network] and FOVs are used.")
    p.add_argument("--json", dest="json_file", default=None, metavar="FILE",
                   help="Also write the results to this JSON file.")
    p.set_defaults(func=_cmd_validate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .errors import ConfigError
    from .evaluate import evaluate_named_volumes, format_scores, write_scores_json
    from .volumes import load_volumes

    if args.border_threshold < 0:
        raise ConfigError(f"--border-threshold: expected a distance >= 0 nm, got {args.border_threshold}")
    cfg = load_cli_config(args)
    if args.json:
        direct = [n.rsplit(":", 1)[0] for n in (args.ground_truth_name, args.prediction_name) if ":" in n]
        check_cli_outputs(args, [args.json], direct)
    volumes = load_volumes(args.volume_files, in_memory=False, nonfinite=cfg.volume.nonfinite) \
        if args.volume_files else {}
    partition = None
    if args.partition_volumes:
        partition = _validation_partition(cfg, args.ground_truth_name)
    scores = evaluate_named_volumes(volumes, args.ground_truth_name, args.prediction_name, partition=partition,
                                    border_threshold_nm=args.border_threshold, pred_zero=args.pred_zero,
                                    n_worst=args.n_worst, resolution=args.resolution, chunk_shape=args.chunk_shape,
                                    progress=sys.stderr.isatty() and not args.no_progress)
    print(format_scores(scores))
    if args.json:
        write_scores_json(scores, args.json)
    return 0


def _validation_partition(cfg, name: str) -> tuple:
    """(partitioning, index) of the validation partition of volume ``name`` under ``cfg.training``."""
    import re

    from .errors import ConfigError

    def lookup(table: dict, what: str):
        hits = [v for k, v in table.items() if re.match(k, name)]
        if len(hits) != 1:
            raise ConfigError(f"[training] {what}: expected exactly one regex matching {name!r}, found {len(hits)}")
        return hits[0]

    return lookup(cfg.training.partitions, "partitions"), lookup(cfg.training.validation_partition,
                                                                  "validation_partition")


def _add_evaluate(sub, common) -> None:
    p = sub.add_parser("evaluate", parents=[common], help="Evaluate a filling result versus a ground truth.",
                       description="Score a segmentation against ground truth with the CREMI metrics (VOI split "
                                   "and merge, adapted Rand error, CREMI score), chunk by chunk: exact and "
                                   "memory-bounded.")
    p.add_argument("ground_truth_name", help="Name of the ground truth volume (or FILE.h5:dataset).")
    p.add_argument("prediction_name", help="Name of the prediction volume, e.g. '<volume> segmentation' from the "
                                           "TOML fill writes (or FILE.h5:dataset).")
    p.add_argument("--border-threshold", type=float, default=25.0, dest="border_threshold",
                   help="Region border threshold (in nm) to ignore. Official CREMI default is 25nm; 0 turns it off.")
    p.add_argument("--partition-volumes", action="store_true", dest="partition_volumes", default=False,
                   help="Partition volumes and only evaluate the validation partitions.")
    p.add_argument("--pred-zero", choices=("cremi", "segment"), default="cremi", dest="pred_zero",
                   help="Prediction label 0 (unclaimed voxels): 'cremi' as CREMI's code (one segment for VOI, "
                        "singletons for ARAND; default) or 'segment' (one ordinary segment).")
    p.add_argument("--n-worst", type=_count, default=10, dest="n_worst",
                   help="How many of the worst split and merged objects to list (default 10).")
    p.add_argument("--resolution", type=float, nargs=3, default=None, metavar=("Z", "Y", "X"),
                   help="Voxel size in nm for the border mask (default: the ground truth's resolution).")
    p.add_argument("--chunk-shape", type=int, nargs=3, default=(32, 512, 512), dest="chunk_shape",
                   metavar=("Z", "Y", "X"), help="Block read at a time; bounds memory (default 32 512 512).")
    p.add_argument("--no-progress", action="store_true", dest="no_progress", help="No progress bar.")
    p.add_argument("--json", default=None, metavar="FILE", help="Also write every number and option to FILE.")
    p.set_defaults(func=_cmd_evaluate)


# Subcommand registry, in the order `diluvian -h` lists them. Each entry adds one
# subparser whose `func` default is its handler.
SUBCOMMANDS: list[Callable] = [
    _add_check_config,
    _add_synthesize,
    _add_train,
    _add_validate,
    _add_view,
    _add_fill,
    _add_sparse_fill,
    _add_gen_subv_bounds,
    _add_evaluate,
]


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (pointing at ``-h``) and exit code 2, like any bad input."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} -h)\n")


def make_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand."""
    parser = _Parser(prog="diluvian", description="Train or run flood-filling networks on EM data.")
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
    except MemoryError as e:  # a size the machine cannot hold (a shape, a batch): say so, as for any bad input
        if args.log_level == "DEBUG":
            log.exception("error")
        detail = " ".join(str(e).split()) or "an allocation failed"
        print(f"diluvian {args.command}: error: out of memory: {detail}; use smaller sizes", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"diluvian {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
