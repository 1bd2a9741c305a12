"""Labelled audio for voice-activity detection, made offline: espeak-ng speech over non-speech.

Real recordings with frame labels would mean downloading a data set; instead sentences from
the Python standard library's docstrings are spoken by espeak-ng (several voices, speeds and
pitches) and laid into long 16 kHz recordings between stretches of silence, coloured noise,
mains hum and clicks, over a background at a varied SNR. The label of each 512-sample frame
comes from the clean speech track alone (its energy), never from a model. Every random
choice is seeded, so the same espeak-ng and Python versions give the same audio.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import io
import math
import re
import shutil
import subprocess
import wave
from dataclasses import dataclass

import numpy as np

SR = 16000  # the rate the models take
FRAME = 512  # samples per model call at 16 kHz (the package's chunk size)
SPEECH_DB = -30.0  # a frame is speech when its clean power is within 30 dB of its utterance's

# Modules whose docstrings give the sentences; plain prose, stable across Python versions.
_MODULES = (
    "argparse", "bisect", "calendar", "collections", "csv", "difflib", "fractions",
    "functools", "heapq", "json", "logging", "pathlib", "random", "shutil", "statistics",
    "string", "tempfile", "textwrap", "threading", "zipfile",
)  # fmt: skip
_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-us-nyc")
_VARIANTS = ("", "+f1", "+f2", "+f3", "+f4", "+m1", "+m3", "+m7", "+klatt", "+klatt2")
_WORDS = re.compile(r"^[A-Z][A-Za-z ,;'-]+[a-z][.]$")


@dataclass
class Recording:
    """One long recording and its per-frame ground truth (1 = speech energy present)."""

    audio: np.ndarray  # float32, SR Hz, length a multiple of FRAME
    labels: np.ndarray  # uint8, one per FRAME samples


def sentences() -> list[str]:
    """Plain English sentences of 6-24 words from stdlib docstrings, sorted (no duplicates)."""
    found: set[str] = set()
    for name in _MODULES:
        mod = importlib.import_module(name)
        docs = [mod.__doc__ or ""]
        for attr in sorted(vars(mod)):
            obj = getattr(mod, attr)
            if not attr.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj)):
                docs.append(inspect.getdoc(obj) or "")
        for doc in docs:
            for part in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                if _WORDS.match(part) and 6 <= len(part.split()) <= 24:
                    found.add(part)
    return sorted(found)


def _espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng not found (apt-get install espeak-ng)")
    return exe


def synthesize(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """espeak-ng's waveform for ``text`` resampled to 16 kHz float32, edge silence trimmed."""
    from scipy.signal import resample_poly

    cmd = [_espeak(), "--stdout", "-v", voice, "-s", str(speed), "-p", str(pitch), text]
    raw = subprocess.run(cmd, capture_output=True, check=True, timeout=60).stdout
    with wave.open(io.BytesIO(raw)) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    x = pcm.astype(np.float64) / 32768.0
    g = math.gcd(SR, rate)
    x = resample_poly(x, SR // g, rate // g)
    loud = np.flatnonzero(np.abs(x) > 1e-3)
    return x[loud[0] : loud[-1] + 1] if loud.size else x[:0]


def _coloured(rng: np.random.Generator, n: int, alpha: float) -> np.ndarray:
    """Unit-RMS noise with power spectrum 1/f**alpha (0 white, 1 pink, 2 brown)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    f[0] = f[1]
    x = np.fft.irfft(spec * f ** (-alpha / 2), n)
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def _hum(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-RMS mains hum: 50 or 60 Hz and a few harmonics, random phases, slow wobble."""
    t = np.arange(n) / SR
    base = float(rng.choice([50.0, 60.0]))
    x = np.zeros(n)
    for k in range(1, 8):
        x += rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * base * k * t + rng.uniform(0, 6.3))
    x *= 1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.1, 1.0) * t)
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def _clicks(rng: np.random.Generator, n: int) -> np.ndarray:
    """Peak-normalised sparse clicks (keyboard, mouse, crackle): short decaying bursts."""
    x = np.zeros(n)
    count = max(1, int(n / SR * rng.uniform(2, 12)))
    for at in rng.integers(0, max(1, n - 200), count):
        size = int(rng.integers(20, 200))
        burst = rng.standard_normal(size) * np.exp(-np.arange(size) / rng.uniform(5, 60))
        x[at : at + size] += burst[: n - at] * rng.uniform(0.2, 1.0)
    return x / (np.max(np.abs(x)) + 1e-12)


def _gap(rng: np.random.Generator, n: int, level: float) -> np.ndarray:
    """A stretch of non-speech at about ``level`` RMS: silence, noise, hum or clicks."""
    kind = rng.choice(["silence", "white", "pink", "brown", "hum", "clicks"])
    if kind == "silence":
        return np.zeros(n)
    loud = level * 10 ** (rng.uniform(-20, 0) / 20)
    if kind == "hum":
        return loud * _hum(rng, n)
    if kind == "clicks":
        return 4 * loud * _clicks(rng, n)
    x = loud * _coloured(rng, n, {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind])
    ramp = min(n // 2, SR // 50)  # no step at the edges: a step is a click of its own
    x[:ramp] *= np.linspace(0, 1, ramp)
    x[n - ramp :] *= np.linspace(1, 0, ramp)
    return x


def build(texts: list[str], seed: int) -> Recording:
    """One recording: gap, utterance, gap, ... over a stationary background at a drawn SNR."""
    rng = np.random.default_rng(seed)
    level = 10 ** (rng.uniform(-32, -20) / 20)  # speech RMS
    parts: list[np.ndarray] = []
    clean: list[np.ndarray] = []
    for text in [*texts, None]:
        n = int(rng.uniform(0.5, 3.5) * SR)
        parts.append(_gap(rng, n, level))
        clean.append(np.zeros(n))
        if text is None:
            break
        voice = str(rng.choice(_VOICES)) + str(rng.choice(_VARIANTS))
        speech = synthesize(text, voice, int(rng.integers(130, 210)), int(rng.integers(25, 80)))
        power = np.mean(speech**2) + 1e-20
        speech *= level / np.sqrt(power) * 10 ** (rng.uniform(-4, 4) / 20)
        parts.append(speech)
        clean.append(speech)
    total = sum(p.size for p in parts)
    total += -total % FRAME
    speech = np.zeros(total)
    audio = np.zeros(total)
    at = 0
    for p, c in zip(parts, clean, strict=True):
        audio[at : at + p.size] = p
        speech[at : at + c.size] = c
        at += p.size
    snr = rng.choice([np.inf, 30.0, 20.0, 12.0, 6.0])
    if np.isfinite(snr):
        alpha = float(rng.choice([0.0, 1.0, 2.0]))
        audio += level / 10 ** (snr / 20) * _coloured(rng, total, alpha)
        if rng.uniform() < 0.3:
            audio += level / 10 ** ((snr + 6) / 20) * _hum(rng, total)
    audio += 1e-5 * rng.standard_normal(total)  # dither: real input is never digital zero
    frames = (speech.reshape(-1, FRAME) ** 2).mean(axis=1)
    labels = (frames > level**2 * 10 ** (SPEECH_DB / 10)).astype(np.uint8)
    peak = np.max(np.abs(audio))
    if peak > 0.99:
        audio *= 0.99 / peak
    return Recording(audio.astype(np.float32), labels)


@functools.lru_cache(maxsize=2)
def recordings(split: str) -> tuple[Recording, ...]:
    """Calibration (~18 s, 2 recordings) or evaluation (~100 s, 6 recordings) audio.

    The sentences are shuffled once; calibration takes the first ones, evaluation the
    rest, and the two use different seeds, so they share neither text nor noise.
    """
    pool = sentences()
    np.random.default_rng(7).shuffle(pool)
    if split == "calib":
        texts, count, seed = pool[:2], 2, 2000
    elif split == "eval":
        texts, count, seed = pool[2:20], 6, 1000
    else:
        raise ValueError(f"unknown split {split!r}")
    per = len(texts) // count
    return tuple(build(texts[i * per : (i + 1) * per], seed + i) for i in range(count))
