"""Fuzzing the image loader: randomly damaged JPEG and PNG files never crash or hang it.

Real JPEG and PNG files (baseline and progressive JPEG with EXIF, RGB, RGBA interlaced and
16-bit PNG) are damaged with seeded random mutations -- flipped bits, overwritten bytes,
huge numbers written over header fields, truncation, inserted and duplicated byte runs --
and every damaged file goes through the three real entry points of the data path:

- ``load_image`` (what ``evaluate``, ``predict``, ``explain`` and ``viz`` call): it must
  return a uint8 array of the asked shape or raise ``BadImage`` with a reason, never
  anything else (any other exception would end those commands with a traceback);
- ``decode_one`` (what training's decode-once cache calls) and ``inspect_file``
  (``cnnlab data check``): an array or a reason, and the reason must not be their
  catch-all "cannot decode: SomeError" fallback, which would mean a decoder bug.

The cases run in a child process (this file run as a script) so that a hang is caught:
each case has an alarm, and the whole child a wall-clock timeout. Those times only guard
against hangs: the cases are a fixed, seeded set (CASES of them, the same on any machine,
about 3 s on a busy 2-core box); a failing case's file is kept under pytest's tmp_path.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

SEED = 20240611
CASES = 400  # every run checks exactly these (seeded) cases
CASE_ALARM_S = 5  # one case may take this long before it counts as a hang
CHILD_TIMEOUT_S = 300  # the whole child, a hang guard only (it takes seconds)
SIZE = (24, 32)  # (height, width) asked of the loader


# ---------------------------------------------------------------------------- the seed files


def seed_files(folder: Path) -> list[Path]:
    """Five small, valid, realistic files to damage."""
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).parent))
    from imagegen import draw

    rng = np.random.default_rng(0)
    photo = np.concatenate([draw("hbar", (48, 64), rng), draw("cross", (48, 64), rng)], axis=0)
    folder.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(photo)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated, so the EXIF path runs too
    out = {
        "baseline.jpg": dict(format="JPEG", quality=90),
        "progressive.jpg": dict(format="JPEG", quality=80, progressive=True, exif=exif),
        "rgb.png": dict(format="PNG"),
        "rgba_interlaced.png": dict(format="PNG", interlace=1),
        "gray16.png": dict(format="PNG"),
    }
    paths = []
    for name, kw in out.items():
        picture = im
        if name.startswith("rgba"):
            picture = im.convert("RGBA")
        elif name.startswith("gray16"):
            picture = Image.fromarray((np.asarray(im.convert("L")).astype(np.uint16) * 257))
        path = folder / name
        buf = io.BytesIO()
        picture.save(buf, **kw)
        path.write_bytes(buf.getvalue())
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------- mutations


def mutate(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """One to three random mutations of ``data``; returns (new bytes, what was done)."""
    b = bytearray(data)
    done = []
    for _ in range(int(rng.integers(1, 4))):
        kind = str(rng.choice(["flip", "byte", "big", "truncate", "insert", "duplicate", "zero"]))
        n = len(b)
        if n < 8:
            break
        # Headers hold the interesting fields: half the edits land in the first 200 bytes.
        at = int(rng.integers(0, min(n, 200))) if rng.random() < 0.5 else int(rng.integers(0, n))
        if kind == "flip":
            b[at] ^= 1 << int(rng.integers(0, 8))
        elif kind == "byte":
            b[at] = int(rng.integers(0, 256))
        elif kind == "big":  # a size or length field turned huge
            b[at:at + 2] = b"\xff\xff"
        elif kind == "truncate":
            del b[max(1, at):]
        elif kind == "insert":
            b[at:at] = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
        elif kind == "duplicate":
            end = min(n, at + int(rng.integers(1, 256)))
            b[at:at] = b[at:end]
        elif kind == "zero":
            end = min(n, at + int(rng.integers(1, 64)))
            b[at:end] = bytes(end - at)
        done.append(f"{kind}@{at}")
    return bytes(b), ",".join(done)


# ---------------------------------------------------------------------------- the child


class Hang(Exception):
    pass


def _on_alarm(signum, frame):
    raise Hang()


def check_one(path: Path) -> dict:
    """Run one damaged file through the three entry points; 'problem' says what went wrong."""
    from cnnlab.data.cache import decode_one
    from cnnlab.data.check import inspect_file
    from cnnlab.data.decode import BadImage, load_image

    result: dict = {"outcome": None, "reason": None, "problem": None}
    try:
        arr = load_image(path, SIZE, 3, "stretch")
        if arr.shape != SIZE + (3,) or arr.dtype != np.uint8:
            result["problem"] = f"load_image returned {arr.dtype} {arr.shape}"
        result["outcome"] = "decoded"
    except BadImage as e:
        result["outcome"], result["reason"] = "bad", e.reason
        if not e.reason or "\n" in e.reason:
            result["problem"] = f"reason is not one line: {e.reason!r}"
    except Hang:
        raise
    except BaseException as e:  # noqa: BLE001 -- exactly what the test looks for
        result["problem"] = f"load_image raised {e.__class__.__name__}: {e}"
        return result
    gray = decode_one(str(path), (16, 16), 1, "letterbox")
    if isinstance(gray, str):
        if gray.startswith("cannot decode:"):
            result["problem"] = f"decode_one fell back to its catch-all: {gray}"
    elif gray.shape != (1, 16, 16):
        result["problem"] = f"decode_one returned shape {gray.shape}"
    info = inspect_file(str(path))
    if info.reason and info.reason.startswith("cannot decode:"):
        result["problem"] = f"inspect_file fell back to its catch-all: {info.reason}"
    return result


def child(folder: Path, seed: int, cases: int) -> None:
    """Print one JSON line per case ("start" first, so a hang names its case)."""
    signal.signal(signal.SIGALRM, _on_alarm)
    seeds = [(p.name, p.read_bytes()) for p in seed_files(folder / "seeds")]
    rng = np.random.default_rng(seed)
    for i in range(cases):
        name, data = seeds[i % len(seeds)]
        damaged, how = mutate(data, rng)
        path = folder / f"case{i:04d}{Path(name).suffix}"
        path.write_bytes(damaged)
        print(json.dumps({"start": i, "seed": name, "how": how, "path": str(path)}), flush=True)
        signal.alarm(CASE_ALARM_S)
        try:
            result = check_one(path)
        except Hang:
            result = {"outcome": None, "reason": None, "problem": f"took more than {CASE_ALARM_S} s (hang)"}
        finally:
            signal.alarm(0)
        if not result["problem"]:
            path.unlink()  # keep only the files that failed
        print(json.dumps({"done": i, **result}), flush=True)


# ---------------------------------------------------------------------------- the test


def test_damaged_jpeg_and_png_never_crash_or_hang_the_loader(tmp_path):
    cmd = [sys.executable, __file__, str(tmp_path), str(SEED), str(CASES)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, env=env)
        out, err, code = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err, code = "timed out", None
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    started = {d["start"]: d for d in lines if "start" in d}
    done = {d["done"]: d for d in lines if "done" in d}
    hung = sorted(set(started) - set(done))
    assert not hung, f"the loader hung on {started[hung[0]]} (file kept there)"
    assert code == 0, f"the fuzz child failed (exit {code}): {err[-2000:]}"
    assert "Warning" not in err, err[-2000:]  # e.g. Pillow's "Corrupt EXIF data" on the user's console

    problems = [(started[i], d["problem"]) for i, d in done.items() if d["problem"]]
    assert not problems, "\n".join(f"{s['path']} ({s['seed']}, {s['how']}): {p}" for s, p in problems[:10])
    outcomes = [d["outcome"] for d in done.values()]
    assert sorted(done) == list(range(CASES)), f"{len(done)} of {CASES} cases ran"
    # Both sides must be exercised: damage the loader survives, and damage it reports.
    assert outcomes.count("decoded") >= 10 and outcomes.count("bad") >= 10, outcomes
    reasons = {d["reason"].split(":")[0] for d in done.values() if d["reason"]}
    assert len(reasons) >= 3, reasons  # several distinct diagnoses, not one blanket message


def test_mutations_are_seeded_and_change_the_file():
    data = bytes(range(256)) * 8
    a = [mutate(data, np.random.default_rng(1)) for _ in range(3)]
    b = [mutate(data, np.random.default_rng(1)) for _ in range(3)]
    assert a == b
    assert a != [mutate(data, np.random.default_rng(2)) for _ in range(3)]
    assert sum(m != data for m, _ in a + b) >= 4


if __name__ == "__main__":
    child(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
