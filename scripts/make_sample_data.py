"""Regenerate the built-in sample data in ``startrack/data`` (deterministic).

    python scripts/make_sample_data.py
"""

from pathlib import Path

import numpy as np
from astropy.io import fits

from startrack import GaussianPSF, Sensor
from startrack.io import write_table
from startrack.simulate import star_field

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


def main():
    sensor = Sensor(gain=0.14, offset=37.0, dark_var=54.4, saturation=4095.0)
    psf = GaussianPSF(0.35)
    img, truth = star_field((512, 512), 60, psf, sensor, flux=(800.0, 60000.0), background=20.0, seed=20261125)
    hdr = fits.Header()
    hdr["EXPTIME"] = (0.1, "exposure time [s]")
    hdr["DATE-OBS"] = ("2026-11-25T22:00:00.000", "UTC start of exposure")
    hdr["COMMENT"] = "startrack sample frame: simulated, Gaussian PSF r = 0.35 px, sky 20 e-/px"
    fits.PrimaryHDU(img.astype(np.uint16), header=hdr).writeto(DATA / "sample_frame.fits", overwrite=True)
    truth.meta["psf"] = psf.spec
    truth.meta["background"] = 20.0
    write_table(truth, DATA / "sample_truth.ecsv")
    (DATA / "sample_camera.toml").write_text(CAMERA)


if __name__ == "__main__":
    main()
