"""Regenerate the built-in sample data in ``startrack/data`` (deterministic).

The sample frame is a real patch of sky in Cygnus (the Milky Way, rich in
stars) seen by the sample camera at the frame's DATE-OBS: Hipparcos 2 stars
to Hp 8 at their apparent places, through a Gaussian PSF and the sensor model.

    python scripts/make_sample_data.py
"""

from pathlib import Path

import numpy as np
from astropy.io import fits

from startrack import GaussianPSF, Sensor
from startrack.io import write_table
from startrack.sky.attitude import Attitude
from startrack.sky.camera import Camera
from startrack.sky.catalog import load_catalog
from startrack.sky.simulate import sky_frame

DATA = Path(__file__).resolve().parents[1] / "startrack" / "data"

CAMERA = """# Sample star sensor: 5.3 um pixels behind a 25 mm lens, 12-bit ADC.
[camera]
focal_length_mm = 25.0
pixel_pitch_um = 5.3
width = 512
height = 512

[sensor]
gain = 0.14
offset = 37.0
dark_var = 54.4
read_noise = 0.0
saturation = 4095.0
"""

DATE_OBS = "2026-11-25T22:00:00.000"
POINTING = (300.0, 35.0, 20.0)  # boresight RA, Dec and roll (deg)


def main():
    (DATA / "sample_camera.toml").write_text(CAMERA)
    camera = Camera.from_toml(DATA / "sample_camera.toml")
    sensor = Sensor.from_toml(DATA / "sample_camera.toml")
    psf = GaussianPSF(0.35)
    catalog = load_catalog(8.0)
    attitude = Attitude.from_radec_roll(*POINTING)
    img, truth = sky_frame(catalog, catalog.apparent(DATE_OBS), attitude, camera, psf, sensor, mag_limit=8.0,
                           background=20.0, seed=20261125)
    hdr = fits.Header()
    hdr["EXPTIME"] = (0.1, "exposure time [s]")
    hdr["DATE-OBS"] = (DATE_OBS, "UTC start of exposure")
    hdr["COMMENT"] = "startrack sample frame: simulated Hipparcos 2 stars to Hp 8 in Cygnus"
    hdr["COMMENT"] = "Gaussian PSF r = 0.35 px, sky 20 e-/px, Hp 7 star = 1500 e-"
    fits.PrimaryHDU(img.astype(np.uint16), header=hdr).writeto(DATA / "sample_frame.fits", overwrite=True)
    truth = truth[np.argsort(-np.asarray(truth["flux"]), kind="stable")]
    truth.meta = {"psf": psf.spec, "background": 20.0, "date_obs": DATE_OBS,
                  "ra_deg": POINTING[0], "dec_deg": POINTING[1], "roll_deg": POINTING[2],
                  "quaternion": [float(v) for v in attitude.quaternion],
                  "note": "x, y in px (pixel centres at integers), flux in e-, hp the Hipparcos magnitude"}
    write_table(truth, DATA / "sample_truth.ecsv")


if __name__ == "__main__":
    main()
