"""``startrack micro axial``: dual-focal-plane axial localisation (simulate, train, evaluate, predict)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.table import Table

from ..io import read_table
from .common import add_output, command_group, progress, pyplot, save, subcommand

HELP = """Axial (z) position of a particle from a pair of defocused images at two focal
planes, by a small CNN run through ONNX (onnxruntime, else OpenCV's dnn).

A stack is an NPY or TIFF array of plane pairs, shape (n, 2, H, W) (planes
second; (n, H, W, 2) is accepted too; a 3-D TIFF of 2n pages alternates the
planes), in any linear intensity unit. Frames larger than the model's 32x32 px
crop are cropped around the particle. A z list is an ECSV/CSV table with a
z_um column (or a text/NPY file of numbers), one z per pair, in um.

Shipped models (--model darkfield or brightfield) are trained for NA 0.8,
n 1.5, 550 nm, 100 nm pixels, planes at -0.5 and +0.5 um, z in [-2, 2] um.

examples:
  startrack micro axial simulate --n 2000 --out stack.npy          # + stack_z.ecsv
  startrack micro axial train stack.npy stack_z.ecsv --out model.onnx
  startrack micro axial evaluate test.npy test_z.ecsv --model model.onnx --plot errors.png
  startrack micro axial predict pairs.npy --model darkfield --out z.ecsv
"""

SIMULATE_HELP = """Simulate a z-stack of plane pairs (scalar Fourier optics, startrack.microscope.defocus)
with shot and read noise: random z in --z-range, or a piezo-like scan with --z-step.
Writes OUT (.npy, or .tif with tifffile) in photo-electrons and OUT_z.ecsv (z_um and
the lateral offset dx_px, dy_px of each pair).

example:
  startrack micro axial simulate --mode brightfield --z-step 0.01 --repeats 5 --out calib.npy
"""

TRAIN_HELP = """Train the axial CNN on a calibration z-stack (a bead scanned through focus) and
write MODEL.onnx plus MODEL.json (metadata, validation RMSE). A random --val-fraction
of the pairs is held out for early stopping; small stacks are augmented with 1 px
shifts and extra noise; of the optics options only --planes (how many planes) and
--mode (recorded in MODEL.json) apply to a stack. With --simulate the network trains on
simulated pairs for the optics given instead (no stack). Needs PyTorch:
pip install "startrack[ml]".

examples:
  startrack micro axial train calib.npy calib_z.ecsv --out model.onnx
  startrack micro axial train --simulate --na 1.2 --planes -0.4 0.4 --z-range -1.5 1.5 --out model.onnx
"""

EVALUATE_HELP = """Predict z for a stack with known z and tabulate the error per z bin: n, bias
(mean error), std and RMSE in nm; overall RMSE and bias on stderr; --plot draws error
and bias versus z (needs matplotlib).

example:
  startrack micro axial evaluate test.npy test_z.ecsv --model model.onnx --out errors.ecsv --plot errors.png
"""

PREDICT_HELP = """Predict the z (um) of every pair of a stack; writes a table with pair and z_um.

example:
  startrack micro axial predict pairs.npy --model darkfield --out z.ecsv
"""

_CHUNK = 4096  # pairs per prediction call: feeds the progress bar


def add_axial(sub):
    command_group(sub, "axial", "axial position from two defocused planes (CNN, ONNX)", HELP,
                  (_add_simulate, _add_train, _add_evaluate, _add_predict), metavar="ACTION")


def _parser(sub, name, help, description):
    p = subcommand(sub, name, help, description)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    return p


def _add_optics(p):
    g = p.add_argument_group("optics and camera (default: the shipped models' optics)")
    g.add_argument("--mode", default="darkfield", choices=["darkfield", "fluorescence", "brightfield"],
                   help="image formation (default darkfield)")
    g.add_argument("--na", type=float, default=0.8, help="numerical aperture (default 0.8)")
    g.add_argument("--index", type=float, default=1.5, help="immersion/medium refractive index (default 1.5)")
    g.add_argument("--wavelength-nm", type=float, default=550.0, help="wavelength, nm (default 550)")
    g.add_argument("--pixel-nm", type=float, default=100.0, help="pixel in the object plane, nm (default 100)")
    g.add_argument("--planes", type=float, nargs="+", default=[-0.5, 0.5], metavar="UM",
                   help="focal-plane positions, um (default -0.5 0.5)")
    g.add_argument("--z-range", type=float, nargs=2, default=[-2.0, 2.0], metavar=("LO", "HI"),
                   help="axial range, um (default -2 2)")
    g.add_argument("--photons", type=float, default=None,
                   help="photons per plane (bright-field: illumination e-/px); default the mode's realistic value")
    g.add_argument("--background", type=float, default=None, help="background, e-/px")
    g.add_argument("--read-noise", type=float, default=None, help="read noise, e- rms")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def _optics(args):
    from ..microscope.defocus import Optics

    return Optics(na=args.na, n=args.index, wavelength_um=args.wavelength_nm / 1e3, pixel_um=args.pixel_nm / 1e3,
                  planes_um=tuple(args.planes))


def _model_arg(p):
    p.add_argument("--model", "-m", default="darkfield", metavar="MODEL",
                   help="model .onnx file, or 'darkfield' / 'brightfield' for a shipped model (default darkfield)")
    p.add_argument("--backend", choices=["onnxruntime", "opencv"], default=None,
                   help="inference back-end (default onnxruntime when installed, else opencv)")


def _load_model(args):
    from ..microscope.axial import DEFAULT_MODELS, AxialLocalizer

    if args.model in DEFAULT_MODELS:
        return AxialLocalizer.load(mode=args.model, backend=args.backend)
    return AxialLocalizer.load(args.model, backend=args.backend)


# -- files ---------------------------------------------------------------------------------------------------

def _read_stack(path, n_planes):
    """A stack file as (n, planes, H, W); see HELP for the layouts."""
    from ..microscope.axial import as_pairs

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    suf = path.suffix.lower()
    try:
        if suf == ".npy":
            data = np.load(path, allow_pickle=False)
        elif suf in (".tif", ".tiff"):
            data = _read_tiff_stack(path)
        else:
            raise ValueError(f"unknown stack format {suf!r}; use .npy or .tif")
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: cannot read stack ({str(exc).splitlines()[0]})") from None
    except ValueError:
        if suf != ".npy":
            raise
        raise ValueError(f"{path}: not a numeric NumPy .npy array") from None
    if data.ndim == 3 and data.shape[0] % n_planes == 0 and data.shape[-1] != n_planes:
        data = data.reshape(-1, n_planes, *data.shape[1:])  # pages alternate the planes
    try:
        pairs, _ = as_pairs(data, n_planes, name=str(path))
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    return pairs


def _read_tiff_stack(path):
    try:
        import tifffile
    except ImportError:
        import cv2

        ok, pages = cv2.imreadmulti(str(path), flags=cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
        if not ok:
            raise ValueError(f"{path}: not a readable TIFF stack") from None
        return np.stack(pages)
    return tifffile.imread(path)


def _write_stack(path, pairs):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".npy":
        np.save(path, pairs)
    elif path.suffix.lower() in (".tif", ".tiff"):
        try:
            import tifffile
        except ImportError:
            raise ValueError("writing a TIFF stack needs tifffile: pip install tifffile (or use .npy)") from None
        tifffile.imwrite(path, pairs)
    else:
        raise ValueError(f"{path}: unknown stack format {path.suffix!r}; use .npy or .tif")


def _read_z(path, n):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    suf = path.suffix.lower()
    if suf in (".ecsv", ".csv", ".fits", ".parquet"):
        table = read_table(path)
        col = next((c for c in ("z_um", "z") if c in table.colnames), None)
        if col is None:
            raise ValueError(f"{path}: no z_um column (columns: {', '.join(table.colnames)})")
        z = np.asarray(table[col], float)
    elif suf == ".npy":
        try:
            z = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError):
            raise ValueError(f"{path}: not a numeric NumPy .npy array of z values") from None
    else:
        try:
            z = np.loadtxt(path, ndmin=1)
        except ValueError as exc:
            raise ValueError(f"{path}: cannot read z values ({str(exc).splitlines()[0]})") from None
    z = np.asarray(z, float).ravel()
    if z.size != n:
        raise ValueError(f"{path}: {z.size} z values for {n} pairs")
    if not np.isfinite(z).all():
        raise ValueError(f"{path}: z contains NaN or inf")
    return z


def _z_path(stack_path):
    p = Path(stack_path)
    return p.with_name(p.stem + "_z.ecsv")


# -- simulate ------------------------------------------------------------------------------------------------

def _add_simulate(sub):
    p = _parser(sub, "simulate", "simulate a z-stack of plane pairs", SIMULATE_HELP)
    p.add_argument("--n", type=int, default=1000, help="pairs at random z (default 1000; ignored with --z-step)")
    p.add_argument("--z-step", type=float, default=None, metavar="UM", help="regular scan through --z-range, um")
    p.add_argument("--repeats", type=int, default=1, help="pairs per scan step (with --z-step; default 1)")
    p.add_argument("--size", type=int, default=32, help="crop width, px (default 32)")
    _add_optics(p)
    p.add_argument("--out", "-o", default="stack.npy", metavar="FILE",
                   help="output stack (.npy or .tif; default stack.npy); z go to FILE_z.ecsv")
    p.set_defaults(func=run_simulate)


def run_simulate(args):
    from dataclasses import replace

    from ..microscope.defocus import simulate_pairs

    lo, hi = args.z_range
    if not hi > lo:
        raise ValueError(f"--z-range: HI must exceed LO, got {lo} {hi}")
    rng = np.random.default_rng(args.seed)
    if args.z_step is not None:
        if not args.z_step > 0 or args.repeats < 1:
            raise ValueError("--z-step must be > 0 and --repeats >= 1")
        z = np.repeat(np.arange(lo, hi + args.z_step / 2, args.z_step), args.repeats)
    else:
        if args.n < 1:
            raise ValueError(f"--n must be >= 1, got {args.n}")
        z = rng.uniform(lo, hi, args.n)
    optics = replace(_optics(args), size=args.size)
    lateral = rng.uniform(-0.5, 0.5, (z.size, 2))
    pairs = np.empty((z.size, optics.n_planes, optics.size, optics.size), np.float32)
    chunk = 1024
    for i in progress(range(0, z.size, chunk), total=-(-z.size // chunk), desc="simulate", quiet=args.quiet):
        pairs[i:i + chunk] = simulate_pairs(z[i:i + chunk], optics, mode=args.mode, lateral_px=lateral[i:i + chunk],
                                            photons=args.photons, background=args.background,
                                            read_noise=args.read_noise, rng=rng)
    _write_stack(args.out, pairs)
    table = Table({"z_um": z * u.um, "dx_px": lateral[:, 0] * u.pix, "dy_px": lateral[:, 1] * u.pix})
    table.meta.update(mode=args.mode, optics=optics.to_dict(), stack=str(args.out))
    if not args.quiet:
        print(f"wrote {z.size} pairs {pairs.shape[1:]} to {args.out}", file=sys.stderr)
    save(table, _z_path(args.out), args.quiet)
    return 0


# -- train ---------------------------------------------------------------------------------------------------

def _add_train(sub):
    p = _parser(sub, "train", "train the axial CNN on a z-stack (or simulated pairs)", TRAIN_HELP)
    p.add_argument("stack", nargs="?", metavar="STACK", help="calibration stack (.npy or .tif)")
    p.add_argument("z", nargs="?", metavar="Z", help="z of each pair (ECSV/CSV z_um column, or text/NPY)")
    p.add_argument("--simulate", action="store_true", help="train on simulated pairs for the optics options")
    p.add_argument("--n-train", type=int, default=40000, help="simulated training pairs (default 40000)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="stack pairs held out (default 0.2)")
    p.add_argument("--epochs", type=int, default=None,
                   help="at most this many epochs (default 30 with --simulate, 60 for a stack)")
    p.add_argument("--max-minutes", type=float, default=9.0, help="stop training after this long (default 9)")
    _add_optics(p)
    p.add_argument("--out", "-o", default="model.onnx", metavar="FILE",
                   help="output model (.onnx, with FILE.json beside it; default model.onnx)")
    p.set_defaults(func=run_train)


def run_train(args):
    try:
        from ..microscope.axial import train, train_from_stack
        import torch  # noqa: F401
    except ImportError:
        raise ValueError('training needs PyTorch: pip install "startrack[ml]"') from None

    log = None if args.quiet else (lambda line: print(line, file=sys.stderr))
    if args.simulate:
        if args.stack:
            raise ValueError("give either a STACK and Z or --simulate, not both")
        model = train(_optics(args), args.mode, z_range=tuple(args.z_range), n_train=args.n_train,
                      photons=args.photons, background=args.background, read_noise=args.read_noise,
                      epochs=args.epochs or 30, max_seconds=args.max_minutes * 60, seed=args.seed, log=log,
                      progress=lambda it, total, desc: progress(it, total=total, desc=desc, quiet=args.quiet))
    else:
        if not (args.stack and args.z):
            raise ValueError("give a STACK and its Z list (or --simulate)")
        n_planes = len(args.planes)
        pairs = _read_stack(args.stack, n_planes)
        z = _read_z(args.z, len(pairs))
        model = train_from_stack(pairs, z, n_planes=n_planes, val_fraction=args.val_fraction, mode=args.mode,
                                 epochs=args.epochs or 60, max_seconds=args.max_minutes * 60, seed=args.seed,
                                 log=log)
    onnx_path, json_path = model.save(args.out)
    if not args.quiet:
        m = model.meta["metrics"]
        print(f"validation RMSE {m['val_rmse_um'] * 1e3:.1f} nm (epoch {m['best_epoch']} of {m['epochs_run']}, "
              f"{m['train_seconds']:.0f} s); wrote {onnx_path} and {json_path}", file=sys.stderr)
    return 0


# -- evaluate and predict -------------------------------------------------------------------------------------

def _predict(loc, pairs, quiet):
    return np.concatenate([loc.predict(pairs[i:i + _CHUNK])
                           for i in progress(range(0, len(pairs), _CHUNK), total=-(-len(pairs) // _CHUNK),
                                             desc="predict", quiet=quiet)])


def _add_evaluate(sub):
    p = _parser(sub, "evaluate", "error and bias of a model versus z on a stack with known z", EVALUATE_HELP)
    p.add_argument("stack", metavar="STACK", help="stack (.npy or .tif)")
    p.add_argument("z", metavar="Z", help="true z of each pair (ECSV/CSV z_um column, or text/NPY)")
    _model_arg(p)
    p.add_argument("--bin-nm", type=float, default=100.0, help="z bin width, nm (default 100)")
    p.add_argument("--plot", metavar="PNG", default=None, help="plot of error and bias versus z")
    add_output(p, "axial_errors.ecsv")
    p.set_defaults(func=run_evaluate)


def run_evaluate(args):
    from ..microscope.axial import axial_errors

    if not args.bin_nm > 0:
        raise ValueError(f"--bin-nm must be > 0, got {args.bin_nm}")
    loc = _load_model(args)
    pairs = _read_stack(args.stack, loc.n_planes)
    z = _read_z(args.z, len(pairs))
    zp = _predict(loc, pairs, args.quiet)
    table = axial_errors(z, zp, bin_um=args.bin_nm / 1e3)
    table.meta.update(model=str(loc.path), stack=str(args.stack))
    save(table, args.out, args.quiet)
    if not args.quiet:
        print(f"{len(z)} pairs: RMSE {table.meta['rmse_nm']:.1f} nm, bias {table.meta['bias_nm']:+.1f} nm, "
              f"worst bin bias {np.nanmax(np.abs(table['bias_nm'])):.1f} nm", file=sys.stderr)
    if args.plot:
        plt = pyplot("no plot: matplotlib is not installed")
        if plt is not None:
            plot_errors(plt, z, zp, table, args.plot, title=loc.path.name)
            if not args.quiet:
                print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def plot_errors(plt, z, zp, table, path, title=""):
    """Scatter of the error versus z with the per-bin bias and RMSE (nm) into ``path``."""
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(z, (zp - z) * 1e3, ",", color="0.6", label="error")
    zc = np.asarray(table["z_um"])
    ax.plot(zc, np.asarray(table["bias_nm"]), "o-", ms=3, label="bias (bin mean)")
    ax.plot(zc, np.asarray(table["rmse_nm"]), "s-", ms=3, label="RMSE (bin)")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("true z (um)")
    ax.set_ylabel("nm")
    lim = max(3 * float(np.nanmedian(np.asarray(table["rmse_nm"]))), 20.0)
    ax.set_ylim(-lim, lim)
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _add_predict(sub):
    p = _parser(sub, "predict", "z of every pair of a stack", PREDICT_HELP)
    p.add_argument("stack", metavar="STACK", help="stack of pairs (.npy or .tif)")
    _model_arg(p)
    add_output(p, "axial_z.ecsv")
    p.set_defaults(func=run_predict)


def run_predict(args):
    loc = _load_model(args)
    pairs = _read_stack(args.stack, loc.n_planes)
    zp = _predict(loc, pairs, args.quiet)
    table = Table({"pair": np.arange(len(zp)), "z_um": zp * u.um})
    table.meta.update(model=str(loc.path), stack=str(args.stack), backend=loc.backend)
    save(table, args.out, args.quiet)
    return 0
