"""What a camera sees of the catalog: projected stars and simulated night-sky frames.

Used to make the sample frame, the star-identification benchmark and tests:
catalog stars at their apparent places for a frame time, rotated by an
attitude, projected through the camera (distortion included) and rendered
through a PSF model and the sensor model, with the defects real frames have
(missing stars, false spots, hot pixels).
"""

from __future__ import annotations

import math

import numpy as np
from astropy.table import Table

from ..psf import PSFModel
from ..sensor import Sensor
from ..simulate import expose, render
from .attitude import Attitude
from .camera import Camera
from .catalog import Catalog

__all__ = ["project_stars", "sky_frame", "random_attitude", "ZERO_POINT"]

#: Photo-electrons from a star of Hp = 0 in the default exposure: an Hp 7 star gives 1500 e-,
#: the small-PSF paper's reference signal.
ZERO_POINT = 1500.0 * 10 ** (0.4 * 7.0)


def random_attitude(rng) -> Attitude:
    """An attitude drawn uniformly over the sphere and in roll."""
    rng = np.random.default_rng(rng)
    z = rng.uniform(-1, 1)
    return Attitude.from_radec_roll(rng.uniform(0, 360), math.degrees(math.asin(z)), rng.uniform(0, 360))


def project_stars(catalog: Catalog, vectors, attitude: Attitude, camera: Camera, *, mag_limit=None, margin=0.0):
    """Catalog stars that land on the image: a Table of ``index, hip, x, y, hp``.

    ``vectors`` are the catalog's directions for the frame (e.g.
    :meth:`Catalog.apparent`); ``margin`` (px) keeps stars that far outside
    the edges (their light still reaches the image).
    """
    keep = np.ones(len(catalog), bool) if mag_limit is None else catalog.mag <= mag_limit
    b = attitude.boresight
    half_diag = math.atan(math.hypot(camera.width, camera.height) / 2.0 / camera.focal_length_px)
    keep &= np.asarray(vectors) @ b > math.cos(half_diag * 1.3 + 0.01)
    idx = np.flatnonzero(keep)
    x, y = camera.vector_to_pixel(attitude.to_camera(vectors[idx]))
    on = camera.in_image(x, y, margin=-margin)
    idx, x, y = idx[on], x[on], y[on]
    return Table({"index": idx, "hip": catalog.hip[idx], "x": x, "y": y, "hp": catalog.mag[idx]})


def sky_frame(catalog: Catalog, vectors, attitude: Attitude, camera: Camera, psf: PSFModel, sensor: Sensor, *,
              mag_limit=7.0, zero_point=ZERO_POINT, background=20.0, drop=0.0, false_spots=0, hot_pixels=0,
              hot_range=(500.0, 4000.0), seed=None):
    """A simulated frame of the sky seen with ``attitude``.

    Parameters
    ----------
    catalog, vectors : the stars and their directions for the frame time.
    mag_limit : float
        Faintest Hp rendered.
    zero_point : float
        Photo-electrons of an Hp = 0 star (flux = zero_point 10^(-0.4 Hp)).
    background : float
        Sky in e- per pixel.
    drop : float
        Fraction of the stars left out at random (clouds, dust, catalog gaps).
    false_spots : int
        Spurious star-like spots (satellites, planets, glints) at random places
        with random fluxes in the range of the rendered stars.
    hot_pixels : int
        Single pixels set to a random value in ``hot_range`` (DN) after exposure.
    seed : int or Generator

    Returns
    -------
    image : 2-D array (DN)
    truth : Table
        One row per rendered spot: ``x, y, flux`` (e-), ``hp``, ``hip`` (0 for
        false spots), ``index`` (catalog index, -1 for false spots); its meta
        holds the hot pixels' positions.
    """
    rng = np.random.default_rng(seed)
    stars = project_stars(catalog, vectors, attitude, camera, mag_limit=mag_limit, margin=3.0)
    if drop > 0 and len(stars):
        stars = stars[rng.uniform(size=len(stars)) >= drop]
    flux = zero_point * 10 ** (-0.4 * np.asarray(stars["hp"], float))
    x, y = np.asarray(stars["x"], float), np.asarray(stars["y"], float)
    hip, idx, hp = np.asarray(stars["hip"]), np.asarray(stars["index"]), np.asarray(stars["hp"], float)
    if false_spots:
        lo = zero_point * 10 ** (-0.4 * mag_limit)
        hi = max(lo * 2, float(flux.max()) if len(flux) else lo * 100)
        fx = rng.uniform(5, camera.width - 6, false_spots)
        fy = rng.uniform(5, camera.height - 6, false_spots)
        ff = lo * (hi / lo) ** rng.uniform(0, 1, false_spots)
        x, y, flux = np.concatenate([x, fx]), np.concatenate([y, fy]), np.concatenate([flux, ff])
        hip = np.concatenate([hip, np.zeros(false_spots, hip.dtype)])
        idx = np.concatenate([idx, np.full(false_spots, -1, idx.dtype)])
        hp = np.concatenate([hp, -2.5 * np.log10(ff / zero_point)])
    light = render((camera.height, camera.width), x, y, flux, psf, background)
    image = expose(light, sensor, rng)
    hot = np.column_stack([rng.integers(0, camera.width, hot_pixels), rng.integers(0, camera.height, hot_pixels)])
    if hot_pixels:
        image[hot[:, 1], hot[:, 0]] = np.round(rng.uniform(*hot_range, hot_pixels))
    truth = Table({"x": x, "y": y, "flux": flux, "hp": hp, "hip": hip, "index": idx})
    truth.meta["hot_pixels"] = hot.tolist()
    truth.meta["attitude_quaternion"] = attitude.quaternion.tolist()
    return image, truth

