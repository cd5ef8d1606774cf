"""Dual-focal-plane axial localisation: a small CNN on two defocused planes, run through ONNX.

After Alexandrov et al. (arXiv:2505.14754): a particle imaged at two focal
planes gives a pair of defocused images whose shapes and relative brightness
fix its axial position z, including its sign, which one dark-field plane
inside the z range cannot tell. A lightweight CNN regresses z from the pair.

* :func:`train` fits the network to pairs simulated by
  :mod:`startrack.microscope.defocus` (any number of planes: one plane gives
  the single-plane baseline); :func:`train_from_stack` fits it to a measured
  calibration z-stack. Both need PyTorch (the ``ml`` extra) and return an
  :class:`AxialModel` whose :meth:`AxialModel.save` writes ONNX plus a JSON
  sidecar.
* :class:`AxialLocalizer` predicts z from pairs with onnxruntime, or OpenCV's
  ``cv2.dnn`` when onnxruntime is missing: no PyTorch needed to predict. The
  package ships models for the default optics (:class:`~.defocus.Optics`).
* :class:`LibraryMatcher` is the model-based baseline: normalised
  cross-correlation against a simulated (or measured) z-stack library.

Pairs are arrays ``(n, C, H, W)``, planes first, in any linear intensity unit
(photo-electrons, DN): the network normalises each pair itself (subtracts its
mean and divides by its standard deviation over all planes and pixels), so an
offset or gain does not matter. Frames larger than the model's crop are cut
around the particle with :func:`crop_pairs`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.table import Table

from ..io import read_array, read_table, sample_path
from .defocus import (
    DEFAULT_BACKGROUND,
    DEFAULT_PHOTONS,
    DEFAULT_READ_NOISE,
    DEFAULT_SCATTERING,
    Optics,
    render,
    simulate_pairs,
)

__all__ = ["AxialLocalizer", "AxialModel", "LibraryMatcher", "as_pairs", "crop_pairs", "read_stack", "read_z",
           "train", "train_from_stack", "axial_errors", "plot_axial_errors", "DEFAULT_MODELS", "BACKENDS"]

#: Shipped models for the default :class:`~.defocus.Optics`, by imaging mode.
DEFAULT_MODELS = {"darkfield": "axial_darkfield.onnx", "brightfield": "axial_brightfield.onnx"}
#: Inference back-ends of :class:`AxialLocalizer`, in order of preference.
BACKENDS = ("onnxruntime", "opencv")
FORMAT = "startrack-axial"
FORMAT_VERSION = 1


# -- input handling ----------------------------------------------------------------------------------------

def as_pairs(pairs, n_planes=None, *, name="pairs"):
    """Check and convert plane pairs to a float32 ``(n, C, H, W)`` array.

    Parameters
    ----------
    pairs : array_like
        ``(n, C, H, W)`` (planes first, the canonical layout), one pair
        ``(C, H, W)``, or planes last ``(n, H, W, C)`` when ``n_planes`` is
        given, the last axis has that length and the second does not.
    n_planes : int, optional
        Number of planes the caller expects.
    name : str
        Parameter name used in error messages.

    Returns
    -------
    pairs : ndarray (n, C, H, W), float32
    single : bool
        True when one pair ``(C, H, W)`` was given.

    Raises
    ------
    ValueError
        Naming ``name`` when the array is not numeric, has the wrong shape or
        holds NaN or inf.
    """
    arr = np.asarray(pairs)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) \
            or np.iscomplexobj(arr):
        raise ValueError(f"{name}: expected a real numeric array, got dtype {arr.dtype}")
    single = arr.ndim == 3
    if single:
        arr = arr[None]
    if arr.ndim != 4:
        raise ValueError(f"{name}: expected shape (n, planes, H, W) or (planes, H, W), got {np.shape(pairs)}")
    if n_planes is not None and arr.shape[1] != n_planes:
        if arr.shape[-1] == n_planes:
            arr = np.moveaxis(arr, -1, 1)
        else:
            raise ValueError(f"{name}: expected {n_planes} plane(s) on axis 1 (n, planes, H, W), got shape "
                             f"{np.shape(pairs)}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: no pairs (shape {np.shape(pairs)})")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return arr, single


def read_stack(path, n_planes=2):
    """A stack file of plane pairs as a float32 ``(n, planes, H, W)`` array.

    Parameters
    ----------
    path : str or Path
        NPY or TIFF holding ``(n, planes, H, W)``, planes last ``(n, H, W,
        planes)``, or a 3-D array of ``n * planes`` images that alternate the
        planes (the pages of a TIFF z-stack).
    n_planes : int
        Planes per pair.

    Raises
    ------
    FileNotFoundError, ValueError
        One line naming the file when it is missing, unreadable or of the
        wrong shape.
    """
    data = read_array(path, what="stack")
    if data.ndim == 3 and data.shape[0] % n_planes == 0 and data.shape[-1] != n_planes:
        data = data.reshape(-1, n_planes, *data.shape[1:])  # pages alternate the planes
    return as_pairs(data, n_planes, name=str(path))[0]


def read_z(path, n=None):
    """The z (um) of each pair of a stack: an ECSV/CSV/FITS/Parquet table's ``z_um`` (or ``z``) column,
    an NPY array or a text file of numbers.

    Parameters
    ----------
    path : str or Path
    n : int, optional
        Number of pairs the values must match.

    Raises
    ------
    FileNotFoundError, ValueError
        One line naming the file when it is missing, unreadable, has no z
        column, the wrong number of values or NaN/inf.
    """
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
        z = read_array(path, what="z values")
    else:
        try:
            z = np.loadtxt(path, ndmin=1)
        except ValueError as exc:
            raise ValueError(f"{path}: cannot read z values ({str(exc).splitlines()[0]})") from None
    z = np.asarray(z, float).ravel()
    if n is not None and z.size != n:
        raise ValueError(f"{path}: {z.size} z values for {n} pairs")
    if not np.isfinite(z).all():
        raise ValueError(f"{path}: z contains NaN or inf")
    return z


def crop_pairs(frames, size=32, *, smooth_px=2.0):
    """Cut a ``size`` x ``size`` crop around the particle of each pair.

    The particle is where the summed planes differ most from their median
    (bright in dark-field and fluorescence, bright or dark in bright-field):
    the maximum of that absolute contrast smoothed by a Gaussian, refined by
    three centroid iterations of the contrast in a ``size`` window.

    Parameters
    ----------
    frames : ndarray (n, C, H, W)
        Pairs, H and W >= ``size`` (see :func:`as_pairs`).
    size : int
        Crop width, px.
    smooth_px : float
        Gaussian smoothing radius for the coarse maximum, px.

    Returns
    -------
    crops : ndarray (n, C, size, size), float32
    origin : ndarray of int (n, 2)
        Column and row (x0, y0) of each crop's first pixel in the frame.
    """
    from scipy.ndimage import gaussian_filter

    frames = np.asarray(frames, dtype=np.float32)
    n, _, h, w = frames.shape
    if h < size or w < size:
        raise ValueError(f"frames: {h}x{w} px is smaller than the {size}x{size} px crop")
    if h == size and w == size:
        return frames, np.zeros((n, 2), int)
    total = frames.sum(axis=1)
    contrast = np.abs(total - np.median(total, axis=(1, 2), keepdims=True))
    smoothed = gaussian_filter(contrast, (0, smooth_px, smooth_px))
    iy, ix = np.unravel_index(smoothed.reshape(n, -1).argmax(axis=1), (h, w))
    cx, cy = ix.astype(float), iy.astype(float)
    half = (size - 1) / 2  # the crop centre, as in the simulator: the particle ends within +-0.5 px of it
    for _ in range(3):  # a defocused ring's maximum is on the ring: walk to its centre
        x0 = np.clip(np.round(cx - half).astype(int), 0, w - size)
        y0 = np.clip(np.round(cy - half).astype(int), 0, h - size)
        win = contrast[np.arange(n)[:, None, None], (y0[:, None] + np.arange(size))[:, :, None],
                       (x0[:, None] + np.arange(size))[:, None, :]]
        win = np.maximum(win - np.median(win, axis=(1, 2), keepdims=True), 0)
        mass = np.maximum(win.sum(axis=(1, 2)), 1e-30)
        cx = x0 + (win.sum(axis=1) * np.arange(size)).sum(axis=1) / mass
        cy = y0 + (win.sum(axis=2) * np.arange(size)).sum(axis=1) / mass
    x0 = np.clip(np.round(cx - half).astype(int), 0, w - size)
    y0 = np.clip(np.round(cy - half).astype(int), 0, h - size)
    crops = frames[np.arange(n)[:, None, None, None], np.arange(frames.shape[1])[None, :, None, None],
                   (y0[:, None] + np.arange(size))[:, None, :, None], (x0[:, None] + np.arange(size))[:, None, None, :]]
    return np.ascontiguousarray(crops), np.stack([x0, y0], axis=1)


def _prepare(pairs, n_planes, size, name="pairs"):
    arr, single = as_pairs(pairs, n_planes, name=name)
    if arr.shape[-2] < size or arr.shape[-1] < size:
        raise ValueError(f"{name}: {arr.shape[-2]}x{arr.shape[-1]} px is smaller than the model's {size}x{size} px "
                         "crop")
    if arr.shape[-2:] != (size, size):
        arr, _ = crop_pairs(arr, size)
    return arr, single


# -- the network -----------------------------------------------------------------------------------------------

def _network(n_planes, *, z_center, z_scale, channels=(16, 32, 32), hidden=64):
    """The CNN as a torch module: per-pair normalisation, three strided 3x3 convolutions, two dense layers.

    The output is z in um (``z_center + z_scale * raw``), so the exported graph
    needs no post-processing.
    """
    import torch
    from torch import nn

    class AxialNet(nn.Module):
        def __init__(self):
            super().__init__()
            layers, c_in = [], n_planes
            for c in channels:  # stride 2 each: 32 -> 16 -> 8 -> 4 keeps the MACs per pair below ~0.6 M
                layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.BatchNorm2d(c), nn.ReLU()]
                c_in = c
            self.features = nn.Sequential(*layers)
            self.head = nn.Sequential(nn.Flatten(), nn.LazyLinear(hidden), nn.ReLU(), nn.Linear(hidden, 1))
            self.register_buffer("scale", torch.tensor(z_scale))
            self.register_buffer("center", torch.tensor(z_center))

        def forward(self, x):
            # one mean and std over all planes: the planes' relative brightness carries z, keep it
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            std = (x - mean).pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
            return self.head(self.features((x - mean) / (std + 1e-6))) * self.scale + self.center

    return AxialNet()


def _batched(run, arr, batch_size):
    """z (float64, (n,)) from ``run(batch) -> (b, 1)`` over ``arr`` in batches of ``batch_size``."""
    return np.concatenate([run(arr[i:i + batch_size])[:, 0] for i in range(0, len(arr), batch_size)]).astype(
        np.float64)


def _macs(n_planes, size, channels=(16, 32, 32), hidden=64):
    """Multiply-accumulates of one forward pass (convolutions and dense layers)."""
    macs, c_in, s = 0, n_planes, size
    for c in channels:
        s = (s + 1) // 2
        macs += s * s * c * c_in * 9
        c_in = c
    return macs + c_in * s * s * hidden + hidden


@dataclass
class AxialModel:
    """A trained axial network (torch) with its metadata; :meth:`save` exports ONNX and JSON.

    Attributes
    ----------
    net : torch.nn.Module
        The network in eval mode; input ``(n, C, size, size)`` float32, output
        ``(n, 1)``, z in um.
    meta : dict
        What the JSON sidecar holds (optics, mode, planes, z range, training
        settings and metrics).
    """

    net: object
    meta: dict = field(default_factory=dict)

    def predict(self, pairs, batch_size=4096):
        """z (um) of each pair with the torch network (see :meth:`AxialLocalizer.predict`)."""
        import torch

        arr, single = _prepare(pairs, self.meta["n_planes"], self.meta["size"])
        with torch.no_grad():
            z = _batched(lambda b: self.net(torch.from_numpy(b)).numpy(), arr, batch_size)
        return float(z[0]) if single else z

    def save(self, path):
        """Write the network as ONNX (opset 13, read by onnxruntime and ``cv2.dnn``) and ``path``.json.

        Returns
        -------
        onnx_path, json_path : Path
        """
        import warnings

        import torch

        path = Path(path).with_suffix(".onnx")
        path.parent.mkdir(parents=True, exist_ok=True)
        dummy = torch.zeros(2, self.meta["n_planes"], self.meta["size"], self.meta["size"])
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice is not the user's concern
            warnings.simplefilter("ignore")
            torch.onnx.export(self.net, (dummy,), str(path), dynamo=False, opset_version=13,
                              input_names=["pairs"], output_names=["z"],
                              dynamic_axes={"pairs": {0: "n"}, "z": {0: "n"}})
        meta = dict(self.meta, model_bytes=path.stat().st_size)
        json_path = path.with_suffix(".json")
        json_path.write_text(json.dumps(meta, indent=2) + "\n")
        return path, json_path


def _torch_setup(seed, threads):
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    return torch


def _fit(x, z, x_val, z_val, *, noise=None, augment=None, z_range, epochs, batch_size, lr,
         patience, max_seconds, seed, threads, channels, hidden, log):
    """Adam on a cosine learning-rate schedule, early stopping (second half) on the validation RMSE; best weights.

    ``noise(x_batch, generator)`` turns a batch of noise-free renders into
    fresh camera images (simulated training); ``augment(x_batch, generator)``
    perturbs measured pairs (stacks).
    """
    torch = _torch_setup(seed, threads)
    gen = torch.Generator().manual_seed(seed)
    z_center, z_scale = float(np.mean(z_range)), float(np.ptp(z_range) / 2)
    net = _network(x.shape[1], z_center=z_center, z_scale=z_scale, channels=channels, hidden=hidden)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(z, np.float32)[:, None])
    xv = torch.from_numpy(np.ascontiguousarray(x_val, dtype=np.float32))
    zv = np.asarray(z_val, np.float64)
    net(xt[:2])  # materialise the lazy layer before the optimiser sees the parameters
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    best, best_state, best_epoch, history = np.inf, None, 0, []
    t0 = time.perf_counter()
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(xt), generator=gen)
        for i in range(0, max(len(xt) - batch_size, 0) + 1, batch_size):  # full batches: BatchNorm needs > 1
            idx = order[i:i + batch_size]
            xb = xt[idx]
            if noise is not None:
                xb = noise(xb, gen)
            if augment is not None:
                xb = augment(xb, gen)
            loss = ((net(xb) - yt[idx]) ** 2).mean() / z_scale ** 2  # ~1 at the start whatever the range
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        net.eval()
        with torch.no_grad():
            zp = _batched(lambda b: net(b).numpy(), xv, 4096)
        rmse = float(np.sqrt(np.mean((zp - zv) ** 2)))
        history.append(rmse)
        if log:
            log(f"epoch {epoch + 1}/{epochs}: validation RMSE {rmse * 1e3:.1f} nm "
                f"({time.perf_counter() - t0:.0f} s)")
        if rmse < best:
            best, best_epoch = rmse, epoch + 1
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
        # no early stop in the schedule's first half: at a high learning rate the validation RMSE jumps about
        if (epoch + 1 >= epochs // 2 and epoch + 1 - best_epoch >= patience) or time.perf_counter() - t0 > max_seconds:
            break
    net.load_state_dict(best_state)
    net.eval()
    n_params = sum(p.numel() for p in net.parameters())
    metrics = {"val_rmse_um": best, "best_epoch": best_epoch, "epochs_run": len(history),
               "val_rmse_history_um": [round(h, 6) for h in history], "train_seconds": time.perf_counter() - t0,
               "n_train": int(len(x)), "n_val": int(len(x_val))}
    arch = {"channels": list(channels), "hidden": hidden, "parameters": int(n_params),
            "macs_per_pair": _macs(x.shape[1], x.shape[-1], channels, hidden)}
    return net, metrics, arch


def _meta(*, n_planes, size, mode, optics, z_range, arch, settings, metrics, source):
    from .. import __version__

    return {"format": FORMAT, "format_version": FORMAT_VERSION, "startrack_version": __version__,
            "source": source, "mode": mode, "optics": optics, "n_planes": n_planes, "size": size,
            "z_range_um": [float(z_range[0]), float(z_range[1])],
            "input": {"name": "pairs", "layout": "NCHW (pair, plane, row, column)", "dtype": "float32",
                      "units": "any linear intensity (photo-electrons, DN)"},
            "output": {"name": "z", "shape": "(n, 1)", "units": "um"},
            "normalisation": "inside the network: per pair, subtract the mean and divide by the standard "
                             "deviation over all planes and pixels",
            "architecture": arch, "training": settings, "metrics": metrics}


def _simulated_batches(photons, background, read_noise, photon_range, background_range):
    """Turn a batch of renders into fresh camera images: random photons and background, a symmetry, noise.

    Each pair gets photons log-uniform in ``photons * photon_range`` and a
    background uniform in ``background * background_range``, one of the 8
    flips/transposes of the square grid (an aberration-free circular pupil is
    symmetric under all of them, so this is 8x the lateral offsets for free),
    then Poisson shot noise and Gaussian read noise (e-).
    """
    import torch

    log_lo, log_hi = np.log(photon_range[0]), np.log(photon_range[1])
    bg_lo, bg_hi = background * background_range[0], background * background_range[1]

    def noise(xb, gen):
        n = xb.shape[0]
        scale = photons * torch.exp(log_lo + (log_hi - log_lo) * torch.rand(n, 1, 1, 1, generator=gen))
        bg = bg_lo + (bg_hi - bg_lo) * torch.rand(n, 1, 1, 1, generator=gen)
        flips = torch.randint(0, 2, (3,), generator=gen).tolist()  # one symmetry per batch: cheap, still random
        if flips[0]:
            xb = xb.flip(2)
        if flips[1]:
            xb = xb.flip(3)
        if flips[2]:
            xb = xb.transpose(2, 3)
        expected = xb * scale + bg
        return torch.poisson(expected, generator=gen) + read_noise * torch.randn(xb.shape, generator=gen)

    return noise


def train(optics=None, mode="darkfield", *, z_range=(-2.0, 2.0), n_train=40000, n_val=4000, photons=None,
          background=None, read_noise=None, photon_range=(0.1, 3.0), background_range=(0.0, 10.0), epochs=30,
          batch_size=256, lr=3e-3, patience=8, max_seconds=540.0, seed=0, threads=2, channels=(16, 32, 32),
          hidden=64, log=None, progress=None):
    """Train the axial CNN on pairs simulated by :mod:`~startrack.microscope.defocus`.

    Training pairs are rendered once, noise-free, at uniform random z and
    random sub-pixel lateral offsets (within +-0.5 px); every batch then gets
    a photon count and a background drawn around the nominal ones (one model
    for a range of brightness), a random flip/transpose (symmetries of the
    aberration-free pupil) and fresh shot and read noise, so the network never
    sees the same image twice. The validation pairs are a fixed noisy set at the nominal
    photon count. One plane in ``optics`` trains the single-plane baseline
    with the same network.

    Parameters
    ----------
    optics : Optics, optional
        Optics and focal planes (default :class:`~.defocus.Optics`).
    mode : {"darkfield", "fluorescence", "brightfield"}
    z_range : (float, float)
        Axial range, um.
    n_train, n_val : int
        Training and held-out validation pairs.
    photons, background, read_noise : float, optional
        Photon count (or bright-field illumination), background (e-/px) and
        read noise (e- rms) as in :func:`~.defocus.simulate_pairs` (None: its
        realistic defaults for ``mode``).
    photon_range : (float, float)
        Training photon counts span these multiples of ``photons`` (log-uniform).
    background_range : (float, float)
        Training backgrounds span these multiples of ``background`` (uniform).
    epochs, batch_size, lr, patience : int, int, float, int
        At most ``epochs`` passes with Adam at learning rate ``lr`` on a
        cosine schedule; from the schedule's second half on, stops after
        ``patience`` epochs without a better validation RMSE; keeps the best
        weights.
    max_seconds : float
        Stop after this much training time, s (data generation excluded).
    seed : int
        Seed of the simulation and of torch (fixed: the same call gives the same model).
    threads : int
        torch CPU threads.
    channels, hidden : tuple of int, int
        Convolution widths and dense-layer width.
    log : callable, optional
        ``log(str)`` receives one line per epoch.
    progress : callable, optional
        ``progress(iterable, total=, desc=)`` wraps the data-generation loop (a progress bar).

    Returns
    -------
    AxialModel
    """
    optics = Optics() if optics is None else optics
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    n_planes = len(optics.planes_um)
    nominal = _nominal_noise(mode, photons, background, read_noise)
    z = rng.uniform(*z_range, n_train)
    lateral = rng.uniform(-0.5, 0.5, (n_train, 2))
    renders = np.empty((n_train, n_planes, optics.size, optics.size), np.float32)
    chunk = 1000
    chunks = range(0, n_train, chunk)
    for lo in (progress(chunks, total=len(chunks), desc="simulate") if progress else chunks):
        sl = slice(lo, lo + chunk)
        renders[sl] = render(z[sl], optics, mode=mode, lateral_px=lateral[sl])
    z_val = rng.uniform(*z_range, n_val)
    x_val = simulate_pairs(z_val, optics, mode=mode, photons=nominal["photons"], background=nominal["background"],
                           read_noise=nominal["read_noise"], rng=rng)
    gen_seconds = time.perf_counter() - t0
    settings = {"simulated": True, "n_train": n_train, "n_val": n_val, "photons": nominal,
                "scattering": [DEFAULT_SCATTERING.real, DEFAULT_SCATTERING.imag] if mode == "brightfield" else None,
                "photon_range": list(photon_range), "background_range": list(background_range), "epochs": epochs,
                "batch_size": batch_size, "lr": lr, "schedule": "cosine", "patience": patience, "seed": seed,
                "threads": threads, "data_seconds": gen_seconds}
    draw = _simulated_batches(photon_range=photon_range, background_range=background_range, **nominal)
    net, metrics, arch = _fit(renders, z, x_val, z_val, noise=draw, z_range=z_range, epochs=epochs,
                              batch_size=batch_size, lr=lr, patience=patience, max_seconds=max_seconds, seed=seed,
                              threads=threads, channels=channels, hidden=hidden, log=log)
    metrics["total_seconds"] = time.perf_counter() - t0
    return AxialModel(net, _meta(n_planes=n_planes, size=optics.size, mode=mode, optics=optics.to_dict(),
                                 z_range=z_range, arch=arch, settings=settings, metrics=metrics, source="simulated"))


def _nominal_noise(mode, photons, background, read_noise):
    """The photon count, background and read noise :func:`~.defocus.simulate_pairs` uses (its defaults where None)."""
    return {"photons": float(DEFAULT_PHOTONS[mode] if photons is None else photons),
            "background": float(DEFAULT_BACKGROUND[mode] if background is None else background),
            "read_noise": float(DEFAULT_READ_NOISE if read_noise is None else read_noise)}


def _stack_augment(shift_px, noise_frac):
    """Random integer shifts (rolled, up to ``shift_px``) and extra Gaussian shot-like noise for small stacks."""
    import torch

    def augment(xb, gen):
        if shift_px:
            dx, dy = torch.randint(-shift_px, shift_px + 1, (2,), generator=gen).tolist()
            xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
        if noise_frac:
            level = xb - xb.amin(dim=(1, 2, 3), keepdim=True)  # shot-noise variance ~ signal above the floor
            xb = xb + noise_frac * level.clamp(min=0).sqrt() * torch.randn(xb.shape, generator=gen)
        return xb

    return augment


def train_from_stack(pairs, z_um, *, n_planes=2, val_fraction=0.2, size=32, copies=None, shift_px=1, noise_frac=0.5,
                     z_range=None, mode="unknown", optics=None, epochs=60, batch_size=128, lr=3e-3, patience=10,
                     max_seconds=540.0, seed=0, threads=2, channels=(16, 32, 32), hidden=64, log=None):
    """Train the axial CNN on a measured calibration z-stack (a particle scanned through focus).

    Parameters
    ----------
    pairs : array_like (n, C, H, W)
        The stack, one pair of planes per z step, planes on axis 1; planes
        last ``(n, H, W, C)`` is accepted too (see :func:`as_pairs`).
        Frames larger than ``size`` are cropped around the particle
        (:func:`crop_pairs`).
    z_um : array_like (n,)
        Axial position of each pair (the piezo's), um.
    n_planes : int
        Planes per pair.
    val_fraction : float
        Fraction of the pairs held out for validation and early stopping
        (random, seeded).
    size : int
        Crop width, px.
    copies : int, optional
        Repeat the training pairs this many times per epoch (augmented
        differently each time); default enough for ~10,000 pairs per epoch.
    shift_px : int
        Random lateral shifts of up to this many px (augmentation, 0 = none).
    noise_frac : float
        Extra Gaussian noise, this fraction of the shot noise implied by the
        signal above the pair's minimum (augmentation, 0 = none).
    z_range : (float, float), optional
        Range the network's output is scaled to (default the stack's).
    mode : str
        Imaging mode, recorded in the metadata.
    optics : Optics, optional
        Recorded in the metadata when known.
    epochs, batch_size, lr, patience, max_seconds, seed, threads, channels, hidden, log
        As in :func:`train`.

    Returns
    -------
    AxialModel
    """
    arr, _ = as_pairs(pairs, n_planes, name="pairs")
    z = np.asarray(z_um, float).ravel()
    if z.size != len(arr):
        raise ValueError(f"z_um: {z.size} values for {len(arr)} pairs")
    if not np.isfinite(z).all():
        raise ValueError("z_um: contains NaN or inf")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction: must be in (0, 1), got {val_fraction}")
    arr, _ = crop_pairs(arr, size)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(arr))
    n_val = max(1, int(round(val_fraction * len(arr))))
    if len(arr) - n_val < 2:
        raise ValueError(f"pairs: {len(arr)} pairs are too few to train on (need at least {n_val + 2})")
    val, tr = order[:n_val], order[n_val:]
    copies = copies or max(1, int(np.ceil(10000 / len(tr))))
    x_train = np.repeat(arr[tr], copies, axis=0)
    z_train = np.repeat(z[tr], copies)
    z_range = (float(z.min()), float(z.max())) if z_range is None else z_range
    settings = {"simulated": False, "n_stack": int(len(arr)), "val_fraction": val_fraction, "copies": copies,
                "shift_px": shift_px, "noise_frac": noise_frac, "epochs": epochs, "batch_size": batch_size,
                "lr": lr, "schedule": "cosine", "patience": patience, "seed": seed, "threads": threads}
    net, metrics, arch = _fit(x_train, z_train, arr[val], z[val], augment=_stack_augment(shift_px, noise_frac),
                              z_range=z_range, epochs=epochs, batch_size=min(batch_size, len(x_train)), lr=lr,
                              patience=patience, max_seconds=max_seconds, seed=seed, threads=threads,
                              channels=channels, hidden=hidden, log=log)
    return AxialModel(net, _meta(n_planes=arr.shape[1], size=size, mode=mode,
                                 optics=None if optics is None else optics.to_dict(), z_range=z_range,
                                 arch=arch, settings=settings, metrics=metrics, source="stack"))


# -- inference ------------------------------------------------------------------------------------------------

class AxialLocalizer:
    """z from plane pairs with an exported axial network, through onnxruntime or ``cv2.dnn``; no torch needed.

    Use :meth:`load`. Attributes: ``meta`` (the JSON sidecar), ``backend``,
    ``n_planes``, ``size``, ``path``.
    """

    def __init__(self, path, meta, backend):
        self.path, self.meta, self.backend = Path(path), meta, backend
        self.n_planes, self.size = int(meta["n_planes"]), int(meta["size"])
        if backend == "onnxruntime":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            self._session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        else:
            import cv2

            self._net = cv2.dnn.readNetFromONNX(str(self.path))

    @classmethod
    def load(cls, path=None, *, mode="darkfield", backend=None):
        """Load a model: ``path`` to its ``.onnx`` (the ``.json`` sidecar beside it), or a shipped default.

        Parameters
        ----------
        path : str or Path, optional
            Model file; None loads the package's model for ``mode`` and the
            default :class:`~.defocus.Optics`.
        mode : {"darkfield", "brightfield"}
            Which shipped model, when ``path`` is None.
        backend : {"onnxruntime", "opencv"}, optional
            Force an inference back-end; default onnxruntime when installed,
            else OpenCV's dnn module.

        Raises
        ------
        FileNotFoundError, ValueError
            When the model or its sidecar is missing or not an axial model,
            or the back-end is unknown or not installed.
        """
        backend = _backend(backend)
        if path is None:
            if mode not in DEFAULT_MODELS:
                raise ValueError(f"mode: no shipped model for {mode!r}; choose one of {', '.join(DEFAULT_MODELS)}")
            path = sample_path(DEFAULT_MODELS[mode])
        path = Path(path)
        if path.suffix.lower() == ".json":
            path = path.with_suffix(".onnx")
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such model file")
        side = path.with_suffix(".json")
        if not side.is_file():
            raise FileNotFoundError(f"{side}: the model's JSON sidecar is missing")
        try:
            meta = json.loads(side.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{side}: not valid JSON ({str(exc).splitlines()[0]})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{side}: not a startrack axial model sidecar")
        missing = [k for k in ("n_planes", "size") if k not in meta]
        if missing:
            raise ValueError(f"{side}: the sidecar lacks {', '.join(missing)}")
        return cls(path, meta, backend)

    def predict(self, pairs, batch_size=4096):
        """Axial position of each pair, um.

        Parameters
        ----------
        pairs : array_like (n, C, H, W) or (C, H, W)
            Plane pairs in any linear intensity unit, planes in the model's
            order (``meta["optics"]["planes_um"]``). Frames larger than the
            model's crop are cropped around the particle (:func:`crop_pairs`).
        batch_size : int
            Pairs per inference call.

        Returns
        -------
        z_um : ndarray (n,) float64, or float for one pair
        """
        arr, single = _prepare(pairs, self.n_planes, self.size)
        z = _batched(self._run, arr, batch_size)
        return float(z[0]) if single else z

    def _run(self, batch):
        if self.backend == "onnxruntime":
            return self._session.run(None, {"pairs": batch})[0]
        self._net.setInput(batch)
        return self._net.forward()

    def __repr__(self):
        return (f"AxialLocalizer({str(self.path)!r}, mode={self.meta.get('mode')!r}, planes="
                f"{(self.meta.get('optics') or {}).get('planes_um')}, backend={self.backend!r})")


def _backend(backend):
    try:
        import onnxruntime  # noqa: F401
        have_ort = True
    except ImportError:
        have_ort = False
    if backend is None:
        return "onnxruntime" if have_ort else "opencv"
    if backend not in BACKENDS:
        raise ValueError(f"backend: {backend!r} is not one of {', '.join(BACKENDS)}")
    if backend == "onnxruntime" and not have_ort:
        raise ValueError("backend: onnxruntime is not installed (pip install onnxruntime)")
    return backend


# -- model-based baseline ----------------------------------------------------------------------------------------

class LibraryMatcher:
    """z by normalised cross-correlation (NCC) against a z-stack library, with parabolic refinement.

    Each pair and each library entry is normalised jointly over its planes
    (zero mean, unit norm), so the NCC of a pair with every entry is one
    matrix product. For each library z the NCC is maximised over the
    library's lateral offsets; the best z on the grid is refined by the
    vertex of the parabola through it and its neighbours.

    Parameters
    ----------
    library : array_like (m, k, C, H, W) or (m, C, H, W)
        Library images at ``m`` axial positions (and ``k`` lateral offsets).
    z_um : array_like (m,)
        Axial positions of the library, um, increasing and evenly spaced.
    """

    def __init__(self, library, z_um):
        lib = np.asarray(library, np.float64)
        if lib.ndim == 4:
            lib = lib[:, None]
        if lib.ndim != 5:
            raise ValueError(f"library: expected shape (m, offsets, planes, H, W), got {np.shape(library)}")
        z = np.asarray(z_um, float).ravel()
        if z.size != lib.shape[0] or z.size < 3:
            raise ValueError(f"z_um: need one z per library entry (>= 3), got {z.size} for {lib.shape[0]}")
        if not np.all(np.diff(z) > 0):
            raise ValueError("z_um: must be strictly increasing")
        self.z_um = z
        self.shape = lib.shape[2:]
        self._lib = _unit(lib.reshape(-1, int(np.prod(self.shape)))).T.astype(np.float32)
        self._m, self._k = lib.shape[:2]

    @classmethod
    def simulated(cls, optics=None, mode="darkfield", *, z_range=(-2.0, 2.0), step_um=0.01,
                  offsets_px=(-1 / 3, 0.0, 1 / 3)):
        """A library rendered by :func:`~.defocus.render` (noise-free).

        Parameters
        ----------
        optics : Optics, optional
        mode : str
        z_range : (float, float)
            Library range, um (extend it a little past the pairs' range so the
            parabola has neighbours at the ends).
        step_um : float
            Grid step, um.
        offsets_px : sequence of float
            Lateral sub-pixel offsets (px) combined in x and y: the library
            holds ``len(offsets_px)**2`` images per z. The default keeps every
            pair within +-0.5 px at most 0.24 px from an entry (noise-free z
            error < 4 nm at the default optics; 2 offsets per axis: 8 nm).
        """
        optics = Optics() if optics is None else optics
        z = np.arange(z_range[0], z_range[1] + step_um / 2, step_um)
        off = np.asarray(offsets_px, float)
        grid = np.stack(np.meshgrid(off, off, indexing="ij"), -1).reshape(-1, 2)
        k = len(grid)
        lib = render(np.repeat(z, k), optics, mode=mode, lateral_px=np.tile(grid, (len(z), 1)))
        return cls(lib.reshape(len(z), k, *lib.shape[1:]), z)

    def predict(self, pairs, batch_size=2048):
        """z (um) of each pair: the refined NCC peak.

        Parameters
        ----------
        pairs : array_like (n, C, H, W) or (C, H, W)
            Same planes and crop size as the library.

        Returns
        -------
        z_um : ndarray (n,), or float for one pair
        """
        arr, single = as_pairs(pairs, self.shape[0])
        if arr.shape[1:] != self.shape:
            raise ValueError(f"pairs: shape {arr.shape[1:]} per pair does not match the library's {self.shape}")
        out = np.empty(len(arr))
        for i in range(0, len(arr), batch_size):
            ncc = (_unit(arr[i:i + batch_size].reshape(-1, self._lib.shape[0])) @ self._lib)
            ncc = ncc.reshape(-1, self._m, self._k).max(axis=2)
            j = np.clip(ncc.argmax(axis=1), 1, self._m - 2)
            rows = np.arange(len(ncc))
            a, b, c = ncc[rows, j - 1], ncc[rows, j], ncc[rows, j + 1]
            den = a - 2 * b + c
            shift = np.where(den < 0, 0.5 * (a - c) / np.where(den < 0, den, -1), 0.0)
            step = self.z_um[j + 1] - self.z_um[j]
            out[i:i + batch_size] = self.z_um[j] + np.clip(shift, -1, 1) * step
        return float(out[0]) if single else out


def _unit(x):
    x = np.asarray(x, np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)


# -- evaluation -------------------------------------------------------------------------------------------------

def axial_errors(z_true, z_pred, *, bin_um=0.1, z_range=None):
    """Per-bin error statistics of axial predictions.

    Parameters
    ----------
    z_true, z_pred : array_like (n,)
        True and predicted z, um.
    bin_um : float
        Bin width in true z, um.
    z_range : (float, float), optional
        Binned range (default the span of ``z_true``).

    Returns
    -------
    Table
        ``z_um`` (bin centre), ``n``, ``bias_nm`` (mean error), ``std_nm``,
        ``rmse_nm``; ``meta`` has the overall ``rmse_nm``, ``bias_nm`` and ``n``.
    """
    zt = np.asarray(z_true, float).ravel()
    zp = np.asarray(z_pred, float).ravel()
    if zt.shape != zp.shape:
        raise ValueError(f"z_pred: {zp.size} values for {zt.size} true z")
    lo, hi = (zt.min(), zt.max()) if z_range is None else z_range
    edges = np.arange(lo, hi + bin_um * 0.5, bin_um)
    if len(edges) < 2:
        edges = np.array([lo, hi])
    idx = np.clip(np.digitize(zt, edges) - 1, 0, len(edges) - 2)
    inside = (zt >= edges[0]) & (zt <= edges[-1])
    err = (zp - zt) * 1e3
    nb = len(edges) - 1
    count = np.bincount(idx[inside], minlength=nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        bias = np.bincount(idx[inside], err[inside], nb) / count
        msq = np.bincount(idx[inside], err[inside] ** 2, nb) / count
    out = Table({"z_um": 0.5 * (edges[:-1] + edges[1:]) * u.um, "n": count, "bias_nm": bias * u.nm,
                 "std_nm": np.sqrt(np.maximum(msq - bias ** 2, 0)) * u.nm, "rmse_nm": np.sqrt(msq) * u.nm})
    out.meta.update(rmse_nm=float(np.sqrt(np.mean(err[inside] ** 2))), bias_nm=float(np.mean(err[inside])),
                    n=int(inside.sum()))
    return out


def plot_axial_errors(z_true, z_pred, table, path, *, title=""):
    """Error against true z with the per-bin bias and RMSE of :func:`axial_errors` (nm), to ``path``.

    Needs matplotlib (the ``plot`` extra).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = np.asarray(z_true, float)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(z, (np.asarray(z_pred, float) - z) * 1e3, ",", color="0.6", label="error")
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
