"""The night-sky job: a sequence of frames from one camera, end to end, resumable and in parallel.

Pass 1 (:func:`run_pass1`) solves every frame (:func:`~startrack.sky.pipeline.solve_frame`:
detection, CG, Gaussian MLE with its CRLB, identification, attitude) and cuts
a stamp around every identified star. The sequence is cut into contiguous
blocks of ``block_frames`` frames, chosen from the frame list alone: inside a
block each solved frame is the next one's prior (tracking), and a block's
first frame, like any frame after a failure, is solved lost-in-space. A block
therefore gives the same rows whoever runs it: this process, a local process
pool or a Dask cluster, in any order. Each finished block is written at once
to ``out/parts`` (temporary file + rename, so a killed run leaves only whole
blocks), and ``resume`` skips the blocks already there.

Pass 2 (:func:`run`) builds each well-observed star's own ePSF from its stamps
across the sequence, relocalises with ePSF MLE and solves the attitudes again
(:func:`startrack.sky.star_epsf.per_star_epsf`), then assesses the accuracy
(:func:`startrack.sky.assess.assess`) and writes ``report.md``.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.table import Table, vstack

from .. import __version__
from ..detect import cut_stamps
from ..io import FRAME_SUFFIXES, read_frame, read_table, write_table
from ..psf import PSFModel, parse_psf
from ..sensor import Sensor
from ..validate import as_float, as_int, load_toml
from .camera import Camera
from .catalog import parse_time
from .pipeline import RESULT_COLUMNS, error_row, solve_frame

__all__ = ["run", "run_pass1", "solve_block", "frame_paths", "star_stamps", "NightSkyResult", "BlockJob",
           "BLOCK_FRAMES", "STAMP"]

#: Frames per block: tracking runs inside a block, a block's first frame is lost-in-space (~3x slower).
BLOCK_FRAMES = 16
#: Side (px) of the stamp cut around each identified star for pass 2.
STAMP = 11
#: The first columns of the frames table; solve_frame's own row keys follow.
FRAME_KEYS = ("frame", "file", "time")


@dataclass
class NightSkyResult:
    """What :func:`run` made.

    Attributes
    ----------
    frames : Table
        One row per input frame, in input order: ``frame, file, time, status,
        reason`` and the per-frame results (attitude, its sigmas, timings).
    stars : Table
        One row per identified star per solved frame.
    assessment : object
        The accuracy assessment (:func:`startrack.sky.assess.assess`); its
        ``headline`` dict holds the summary numbers.
    report : Path
        ``report.md``.
    out : Path
        The output folder.
    """

    frames: Table
    stars: Table
    assessment: object
    report: Path
    out: Path


@dataclass(frozen=True)
class BlockJob:
    """Everything a block needs besides the frames and the identifier (sent once to every worker).

    ``time`` (ISO UTC) and ``cadence`` (s) give frame ``k`` the time
    ``time + k cadence`` when its header has no ``time_key``; ``stamp`` is
    the stamp side (px).
    """

    model: PSFModel
    sensor: Sensor | None
    time: str | None
    cadence: float | None
    time_key: str
    threshold: float
    stamp: int


def frame_paths(frames) -> list[Path]:
    """The frame files: a folder's frame files (sorted by name), or the given list as it is.

    A listed file that is missing stays in the list: it becomes an error row.
    """
    if isinstance(frames, (str, os.PathLike)) and Path(frames).is_dir():
        folder = Path(frames)
        paths = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(FRAME_SUFFIXES))
        if not paths:
            raise ValueError(f"frames: no frame files ({', '.join(FRAME_SUFFIXES)}) in {folder}")
        return paths
    if isinstance(frames, (str, os.PathLike)):
        return [Path(frames)]
    paths = [Path(p) for p in frames]
    if not paths:
        raise ValueError("frames: the list of frames is empty")
    return paths


def _one_line(exc) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _frame_time(header, index, job: BlockJob):
    """(astropy Time, ISO UTC string) of frame ``index``; ValueError when it has none."""
    value = header.get(job.time_key) if header is not None else None
    if value is not None and str(value).strip():
        try:
            t = parse_time(value)
        except ValueError:
            raise ValueError(f"{job.time_key} = {value!r} in the header is not a time") from None
    elif job.time is not None:
        t = parse_time(job.time) + index * job.cadence * u.s
    else:
        raise ValueError(f"no time: the frame has no {job.time_key} and no start time and cadence were given")
    t = t.utc
    t.precision = 6
    return t, t.isot


def star_stamps(image, x, y, size=STAMP):
    """``size`` x ``size`` float32 cut-outs centred on the pixel holding each (x, y), NaN off the frame, and their
    (column, row) origins: pass 2's stamps (a star's ePSF needs the star in the middle, even at the edge)."""
    origins = np.column_stack([np.floor(np.asarray(x) + 0.5), np.floor(np.asarray(y) + 0.5)]).astype(np.int64)
    origins -= size // 2
    return cut_stamps(image, origins, size).astype(np.float32), origins


def _table(rows, first) -> Table:
    """Rows (dicts) as a Table: ``first`` columns, then every other key in order of appearance.

    A key a row lacks (an error row has no stage timings) is NaN there, "" for text, 0 for counts.
    """
    names = list(first)
    for row in rows:
        names += [k for k in row if k not in names]
    cols = {}
    for name in names:
        present = [r[name] for r in rows if name in r]
        fill = "" if isinstance(present[0], str) else 0 if isinstance(present[0], (int, np.integer)) else math.nan
        cols[name] = [r.get(name, fill) for r in rows]
    return Table(cols, names=names)


def solve_block(identifier, job: BlockJob, block):
    """Solve one block of consecutive frames, tracking from frame to frame.

    Parameters
    ----------
    identifier : StarIdentifier
        The camera's identifier (its pattern database).
    job : BlockJob
    block : sequence of (int, str or Path)
        ``(index in the sequence, file)`` of each frame, in order.

    Returns
    -------
    dict
        ``frames`` (Table, one row per frame), ``stars`` (Table, one row per
        identified star of each solved frame, with ``stamp``, its row in
        ``stamps``), ``stamps`` (n, S, S) float32 DN and ``origins`` (n, 2)
        frame (column, row) of each stamp's pixel [0, 0].
    """
    # Apparent places are reused for a minute of frame time from the first frame of that minute seen (by the
    # catalog and by the identifier): starting each block afresh makes them depend on the block alone, not on
    # which blocks this worker ran before.
    identifier.catalog.forget_apparent()
    identifier.catalog_vectors()
    rows, tables, stamps, origins = [], [], [], []
    n_stamps = 0
    prior = None
    for index, path in block:
        row = {"frame": int(index), "file": str(path), "time": ""}
        try:
            image, meta = read_frame(path)
            when, row["time"] = _frame_time(meta.get("header"), index, job)
            res = solve_frame(image, identifier, job.model, job.sensor, time=when, prior=prior,
                              threshold=job.threshold, bit_depth=meta.get("bit_depth"))
        except (ValueError, OSError) as exc:
            row.update(error_row(_one_line(exc)))
            prior = None
        else:
            row.update(res.row)
            prior = res.solution if res.solution.solved else None
            if prior is not None:
                stars = res.stars[np.asarray(res.stars["hip"]) > 0]
                stars.meta = {}
                cut, org = star_stamps(image, stars["x"], stars["y"], job.stamp)
                stars["frame"] = int(index)
                stars["stamp"] = np.arange(n_stamps, n_stamps + len(stars))
                n_stamps += len(stars)
                tables.append(stars)
                stamps.append(cut)
                origins.append(org)
        rows.append(row)
    order = list(FRAME_KEYS) + [c for c in RESULT_COLUMNS if c not in FRAME_KEYS]
    frames = _table(rows, order)
    if tables:
        stars = vstack(tables, metadata_conflicts="silent")
        stars = stars[["frame", "hip"] + [c for c in stars.colnames if c not in ("frame", "hip")]]
    else:
        stars = Table(names=["frame", "hip", "stamp"], dtype=[np.int64, np.int64, np.int64])
    size = job.stamp
    return {"frames": frames, "stars": stars,
            "stamps": np.concatenate(stamps) if stamps else np.zeros((0, size, size), np.float32),
            "origins": np.concatenate(origins) if origins else np.zeros((0, 2), np.int64)}


# -- the parts folder: one block per file set, written atomically ---------------------------------------------


def _replace(path: Path, write):
    """``write(tmp)`` then rename over ``path``: a reader (or a resumed run) sees the whole file or none."""
    tmp = path.with_name(".tmp-" + path.name)
    write(tmp)
    os.replace(tmp, path)


def _part(parts: Path, k: int) -> Path:
    return parts / f"block_{k:05d}"


def _write_part(parts: Path, k: int, result: dict):
    stem = _part(parts, k)

    def npz(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, stamps=result["stamps"], origins=result["origins"])

    _replace(stem.with_suffix(".npz"), npz)
    _replace(stem.with_suffix(".stars.ecsv"), lambda tmp: write_table(result["stars"], tmp))
    # the frames table goes last: its presence is what marks the block done
    _replace(stem.with_suffix(".frames.ecsv"), lambda tmp: write_table(result["frames"], tmp))


def _read_ecsv(path: Path) -> Table:
    table = read_table(path)
    for c in table.colnames:
        if table[c].dtype.kind == "U" and hasattr(table[c], "mask"):
            table[c] = table[c].filled("")  # ECSV reads an empty string back as masked
    return table


def _read_part(parts: Path, k: int) -> dict:
    stem = _part(parts, k)
    with np.load(stem.with_suffix(".npz")) as data:
        stamps, origins = data["stamps"], data["origins"]
    return {"frames": _read_ecsv(stem.with_suffix(".frames.ecsv")),
            "stars": _read_ecsv(stem.with_suffix(".stars.ecsv")), "stamps": stamps, "origins": origins}


def _done(parts: Path, n_blocks: int) -> set[int]:
    return {k for k in range(n_blocks) if _part(parts, k).with_suffix(".frames.ecsv").is_file()}


def _conform(tables):
    """The tables stacked, a column missing from some of them filled as :func:`_table` fills a key."""
    tables = [t for t in tables if len(t)]
    if not tables:
        return None
    names = []
    for t in tables:
        names += [c for c in t.colnames if c not in names]
    for t in tables:
        for c in names:
            if c not in t.colnames:
                kind = next(s[c].dtype.kind for s in tables if c in s.colnames)
                t[c] = np.full(len(t), "" if kind == "U" else 0 if kind in "iub" else math.nan)
    out = vstack([t[names] for t in tables], metadata_conflicts="silent")
    out.meta = {}
    return out


def _assemble(parts: Path, n_blocks: int):
    results = [_read_part(parts, k) for k in range(n_blocks)]
    frames = _conform([r["frames"] for r in results])
    offset, stars = 0, []
    for r in results:
        s = r["stars"]
        s["stamp"] += offset
        offset += len(r["stamps"])
        stars.append(s)
    stars = _conform(stars)
    if stars is None:
        stars = results[0]["stars"]
    size = results[0]["stamps"].shape[1]
    stamps = np.concatenate([r["stamps"] for r in results]) if offset else np.zeros((0, size, size), np.float32)
    origins = np.concatenate([r["origins"] for r in results]) if offset else np.zeros((0, 2), np.int64)
    return frames, stars, stamps, origins


# -- where the blocks run ---------------------------------------------------------------------------------------------


_WORKER = {}


def _init_worker(identifier, job):
    _WORKER["identifier"], _WORKER["job"] = identifier, job


def _pool_block(block):
    return solve_block(_WORKER["identifier"], _WORKER["job"], block)


_LOCKS: dict[int, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


def _dask_block(identifier, job, block):
    """solve_block on a Dask worker: one block at a time per identifier, whose kernels share scratch buffers."""
    with _LOCKS_LOCK:
        lock = _LOCKS.setdefault(id(identifier), threading.Lock())
    with lock:
        return solve_block(identifier, job, block)


def _serial(identifier, job, blocks, todo):
    for k in todo:
        yield k, solve_block(identifier, job, blocks[k])


def _pool(identifier, job, blocks, todo, workers):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    todo = list(todo)
    if todo:
        # The first block here: it compiles the kernels and writes numba's cache before any worker starts, as
        # workers compiling into one empty cache at once can read each other's half-written files and crash.
        yield from _serial(identifier, job, blocks, todo[:1])
        todo = todo[1:]
    # spawn: a forked child would inherit numba's and OpenMP's threads in an undefined state
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                             initargs=(identifier, job)) as pool:
        futures = {pool.submit(_pool_block, blocks[k]): k for k in todo}
        for fut in as_completed(futures):
            yield futures[fut], fut.result()


def _dask(identifier, job, blocks, todo, scheduler):
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise ValueError("scheduler: Dask is not installed; pip install 'startrack[dist]'") from None
    own = not isinstance(scheduler, Client)
    client = Client(scheduler) if own else scheduler
    try:
        # the identifier (pattern database, ~60 MB) goes to every worker once, not with every block
        ident, shared = client.scatter([identifier, job], broadcast=True, hash=False)
        futures = {client.submit(_dask_block, ident, shared, blocks[k], pure=False): k for k in todo}
        for fut in as_completed(futures):
            yield futures[fut], fut.result()
    finally:
        if own:
            client.close()


# -- the job ----------------------------------------------------------------------------------------------------------


def _camera(camera):
    if isinstance(camera, Camera):
        return camera, None
    if isinstance(camera, (str, os.PathLike)):
        return Camera.from_toml(camera), Path(camera)
    raise ValueError(f"camera must be a Camera or a camera TOML file, got {type(camera).__name__}")


def _settings(paths, camera, sensor, model, job_time, cadence, time_key, threshold, block_frames, stamp):
    """What the results of pass 1 depend on: a resumed run must have the same."""
    return {"frames": [str(p.resolve()) for p in paths], "camera": camera.to_toml(),
            "sensor": sensor.to_toml() if sensor is not None else None, "psf": model.spec, "time": job_time,
            "cadence": cadence, "time_key": time_key, "threshold": threshold, "block_frames": block_frames,
            "stamp": stamp}


def _start(out: Path, settings: dict, resume: bool):
    """Record the run in ``out/run.json``; when resuming, refuse one with other inputs."""
    record = out / "run.json"
    if record.is_file():
        if not resume:
            raise ValueError(f"{out} already holds a run: resume it (--resume) or choose another --out")
        try:
            old = json.loads(record.read_text())
        except ValueError:
            raise ValueError(f"{record} is damaged: cannot resume; choose another --out") from None
        diff = [k for k in settings if old.get("settings", {}).get(k) != settings[k]]
        if diff:
            raise ValueError(f"cannot resume {out}: its run had other {', '.join(diff)}; use the same inputs and "
                             f"options or another --out")
        return
    out.mkdir(parents=True, exist_ok=True)
    _replace(record, lambda tmp: tmp.write_text(json.dumps({"startrack": __version__, "settings": settings},
                                                           indent=1)))


def _note(progress):
    return (lambda msg: print(f"startrack nightsky: {msg}", file=sys.stderr)) if progress else (lambda msg: None)


def _identifier(camera, note):
    """The camera's StarIdentifier, its pattern database from the cache or built (and cached)."""
    from .starid import StarIdentifier

    identifier = StarIdentifier(camera, progress=note)
    db = identifier.database
    note(f"pattern database: {len(db)} patterns, " + ("loaded from the cache" if db.from_cache else
                                                      f"built in {db.build_seconds:.1f} s and cached"))
    return identifier


def run_pass1(frames, camera, *, out, sensor=None, psf="gaussian:0.5", time=None, cadence=None, time_key="DATE-OBS",
              workers=None, scheduler=None, resume=False, threshold=5.0, block_frames=BLOCK_FRAMES, stamp=STAMP,
              progress=True, identifier=None):
    """Pass 1 of the night-sky job: every frame solved, every identified star's stamp cut; blocks kept in ``out``.

    Parameters
    ----------
    frames : folder, file or list of files
        The sequence, in time order (a folder: its frame files by name).
    camera : Camera or camera TOML file
        With a file, its ``[sensor]`` table is the sensor unless ``sensor`` is given.
    out : str or Path
        Output folder: ``run.json`` (inputs and options) and ``parts/`` (one set of files per block).
    sensor : Sensor, optional
        Without one (and no ``[sensor]`` table) the noise is measured from each frame.
    psf : str or PSFModel
        Model of the MLE fit (default ``gaussian:0.5``).
    time : ISO string (UTC), optional
        With ``cadence`` (s): frame ``k`` (0-based in the sequence) is at
        ``time + k cadence`` when its header has no ``time_key``. A frame
        with no time at all is an error row.
    time_key : str
        FITS header keyword holding the frame time (default ``DATE-OBS``).
    workers : int, optional
        Local worker processes (default all cores); 1 runs in this process.
    scheduler : str or distributed.Client, optional
        A Dask scheduler address (``tcp://host:port``) or client: the blocks
        run there instead (workers read the frames by path, so they must see
        the same files).
    resume : bool
        Continue the run in ``out``: blocks already written are kept.
    threshold : float
        Detection threshold (sigma).
    block_frames : int
        Frames per block (tracking runs inside a block).
    stamp : int
        Stamp side (px, odd).
    progress : bool
        A progress bar and notes on stderr.
    identifier : StarIdentifier, optional
        Built for ``camera`` when not given (its pattern database cached).

    Returns
    -------
    frames, stars : Table
        As :func:`solve_block`'s, for the whole sequence.
    stamps : (n, S, S) float32 array
    origins : (n, 2) int array
    """
    paths = frame_paths(frames)
    cam, toml = _camera(camera)
    if sensor is None and toml is not None and "sensor" in load_toml(toml):
        sensor = Sensor.from_toml(toml)
    model = parse_psf(psf) if isinstance(psf, str) else psf
    if not isinstance(model, PSFModel):
        raise ValueError(f"psf must be a PSF model or its text form (gaussian:SIGMA, epsf:FILE), got {psf!r}")
    if (time is None) != (cadence is None) and (len(paths) > 1 or cadence is not None):
        raise ValueError("time and cadence go together: the start time (ISO UTC) and the seconds between frames")
    if time is not None:
        parse_time(time)  # a bad start time is a usage error, not an error row per frame
        time = str(time)
    if cadence is not None:
        cadence = as_float(cadence, "cadence", nonnegative=True, unit="seconds")
    block_frames = as_int(block_frames, "block_frames", minimum=1)
    stamp = as_int(stamp, "stamp", minimum=3, odd=True)
    threshold = as_float(threshold, "threshold", positive=True, unit="sigma")
    out = Path(out)
    _start(out, _settings(paths, cam, sensor, model, time, cadence, time_key, threshold, block_frames, stamp), resume)
    parts = out / "parts"
    parts.mkdir(exist_ok=True)

    blocks = [list(enumerate(paths))[i:i + block_frames] for i in range(0, len(paths), block_frames)]
    done = _done(parts, len(blocks))
    todo = [k for k in range(len(blocks)) if k not in done]
    note = _note(progress)
    if todo:
        if identifier is None:
            identifier = _identifier(cam, note)
        job = BlockJob(model, sensor, time, cadence, time_key, threshold, stamp)
        if scheduler is not None:
            runner = _dask(identifier, job, blocks, todo, scheduler)
        else:
            workers = (os.cpu_count() or 1) if workers is None else as_int(workers, "workers", minimum=1)
            workers = min(workers, len(todo))
            runner = (_pool(identifier, job, blocks, todo, workers) if workers > 1
                      else _serial(identifier, job, blocks, todo))
        _drive(runner, parts, blocks, done, progress, note)
    return _assemble(parts, len(blocks))


def _drive(runner, parts, blocks, done, progress, note):
    """Write each block as it comes in, with a progress bar of frames/s and frames solved."""
    from tqdm.auto import tqdm

    n = sum(len(b) for b in blocks)
    before = sum(len(blocks[k]) for k in done)
    if done:
        note(f"resuming: {len(done)} of {len(blocks)} blocks ({before} frames) already done")
    solved = 0
    with tqdm(total=n, initial=before, desc="nightsky", unit="frame", disable=not progress, smoothing=0.1) as bar:
        for k, result in runner:
            _write_part(parts, k, result)
            solved += int(np.sum(np.asarray(result["frames"]["status"]) == "solved"))
            bar.update(len(blocks[k]))
            bar.set_postfix(solved=solved, refresh=False)


def run(frames, camera, *, out, sensor=None, site=None, psf="gaussian:0.5", time=None, cadence=None,
        time_key="DATE-OBS", workers=None, scheduler=None, resume=False, epsf=True, min_frames=20, degree=2,
        threshold=5.0, block_frames=BLOCK_FRAMES, progress=True, identifier=None) -> NightSkyResult:
    """The night-sky job: a frame sequence from a camera to star tables, attitudes and an accuracy report.

    Pass 1 as :func:`run_pass1` (all of whose parameters this takes); then,
    with ``epsf``, each star seen in at least ``min_frames`` frames gets its
    own ePSF from its stamps (7x7 ROI, 4x oversampled), is relocalised with
    ePSF MLE, and the attitudes are solved again; then the assessment:
    trajectories fitted by polynomials of ``degree`` in time, accuracy per
    PL region, attitude against the Earth's rotation at ``site`` (from the
    camera file's ``[site]`` table when not given), failed frames.

    Writes ``out/frames.ecsv``, ``out/stars.ecsv`` and ``out/report.md``
    (with its tables and plots) beside pass 1's ``run.json`` and ``parts/``.

    Returns
    -------
    NightSkyResult

    Examples
    --------
    >>> res = run("frames/", "frames/camera.toml", out="night")   # doctest: +SKIP
    >>> res.assessment.headline                                    # doctest: +SKIP
    """
    from .assess import assess
    from .earth import Site

    cam, toml = _camera(camera)
    if sensor is None and toml is not None and "sensor" in load_toml(toml):
        sensor = Sensor.from_toml(toml)
    if site is None and toml is not None:
        site = Site.from_toml(toml)
    model = parse_psf(psf) if isinstance(psf, str) else psf
    if identifier is None:
        identifier = _identifier(cam, _note(progress))
    frames_t, stars, stamps, origins = run_pass1(
        frames, cam, out=out, sensor=sensor, psf=model, time=time, cadence=cadence, time_key=time_key,
        workers=workers, scheduler=scheduler, resume=resume, threshold=threshold, block_frames=block_frames,
        progress=progress, identifier=identifier)
    if epsf:
        from .star_epsf import per_star_epsf

        stars, frames_t = per_star_epsf(stars, stamps, origins, frames_t, cam, sensor, identifier.catalog, model=model,
                                        min_frames=min_frames, roi=7, oversampling=4)
    out = Path(out)
    a = assess(frames_t, stars, cam, site=site, degree=degree, model=model, sensor=sensor)
    report = a.write(out)
    for table, name in ((frames_t, "frames.ecsv"), (stars, "stars.ecsv")):
        plain = table.copy(copy_data=False)
        # pass 2 may keep tables in the meta (per-star ePSF summaries); ECSV's header holds only plain values
        plain.meta = {k: v for k, v in table.meta.items() if isinstance(v, (str, int, float, bool, list))}
        write_table(plain, out / name)
    return NightSkyResult(frames_t, stars, a, Path(report), out)
