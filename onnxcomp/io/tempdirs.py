"""Temp folders beside a destination that nobody else can steer.

Temp folders (``.onnxcomp-*`` beside the destination) are named with our pid, start
time and a signature a planted folder cannot forge. A later run removes the ones
whose owner is gone (kill -9, power cut). One killed while publishing holds a manifest
of plain names: those files alone are renamed into the folder's own parent first (the
new set lands whole); a folder that is not provably ours is never read or touched.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import secrets
import shutil
import stat
from pathlib import Path

from onnxcomp.io.writer import note_written, signals_deferred

OWNER = ".onnxcomp-owner"
MANIFEST = ".onnxcomp-publish"
PREFIX = ".onnxcomp-"


def _start_time(pid: int) -> str:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        return text.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _alive(pid: int, started: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not started or _start_time(pid) in ("", started)


def _mac(stem: str) -> str:
    """What a planted folder cannot forge: its name's pid, start time and random token
    signed with a key only this user can read (another user's folder also fails the
    owner check)."""
    return hmac.new(_user_key(), stem.encode(), "sha256").hexdigest()[:24]


def _owner_of(folder: Path) -> tuple[int, str] | None:
    """(pid, start time) from a folder name ``make_temp_dir`` made; None when the name
    does not carry a valid signature."""
    parts = folder.name.split("-")
    if len(parts) < 5:
        return None
    stem = "-".join(parts[-4:-1])
    if not hmac.compare_digest(parts[-1], _mac(stem)):
        return None
    try:
        return int(parts[-4]), "" if parts[-3] == "0" else parts[-3]
    except ValueError:
        return None


def _user_key() -> bytes:
    """A random key in a 0700 folder of this user's (created once, O_EXCL|O_NOFOLLOW)."""
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "onnxcomp"
    path = home / "sweep.key"
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            key = f.read(64)
        if st.st_uid == os.getuid() and not st.st_mode & 0o077 and len(key) == 32:
            return key
    except OSError:
        pass
    return _PROCESS_KEY  # no cache folder: only this process's folders are recognised


_PROCESS_KEY = secrets.token_bytes(32)


def make_temp_dir(parent: Path, prefix: str = PREFIX) -> Path:
    """A temp folder in ``parent`` whose name says (and signs) its owner, for
    ``sweep_stale``: made by one ``mkdir``, so a kill at any moment leaves either no
    folder or one the next run recognises.

    A SIGTERM or Ctrl-C that came while the folder was made is delivered when the
    deferral ends, before the caller holds the folder: it is removed here, not left to
    the next run's sweep."""
    folder: Path | None = None
    try:
        with signals_deferred():
            pid = os.getpid()
            started = _start_time(pid) or "0"
            while folder is None:
                stem = f"{pid}-{started}-{secrets.token_hex(8)}"
                try:
                    os.mkdir(parent / f"{prefix}{stem}-{_mac(stem)}", 0o700)
                except FileExistsError:
                    continue
                folder = parent / f"{prefix}{stem}-{_mac(stem)}"
            os.chmod(folder, 0o700)
            (folder / OWNER).write_text(json.dumps({"pid": pid, "started": started}))
        return folder
    except BaseException:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        raise


def publish(folder: Path, dest: Path, names: list[str]) -> None:
    """Rename ``names`` from ``folder`` into ``dest`` (its parent) as one unit.

    The manifest (plain names, never a path) is renamed into place before the first
    rename: if we are killed midway, ``sweep_stale`` finishes the renames, so the new
    set of files lands whole, never half. Ctrl-C and SIGTERM wait until the end."""
    if dest.resolve() != folder.resolve().parent:
        raise ValueError("publish: a temp folder publishes into its own parent")
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps({"names": names}))
    with signals_deferred():
        os.replace(tmp, folder / MANIFEST)
        _finish_publish(folder)


def _finish_publish(folder: Path) -> None:
    """Finish the renames a manifest lists, from ``folder`` into its parent only: each
    name a plain file name of a regular file inside ``folder``, each destination absent
    or a regular file (a FIFO or a folder planted there meanwhile is left alone)."""
    fd = os.open(folder / MANIFEST, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd) as f:
        names = json.loads(f.read(1 << 16))["names"]
    for name in names:
        if (
            not isinstance(name, str)
            or name in ("", ".", "..", OWNER, MANIFEST)
            or "/" in name
            or "\0" in name
            or Path(name).name != name
        ):
            continue
        src, dst = folder / name, folder.parent / name
        try:
            if not stat.S_ISREG(src.lstat().st_mode):
                continue
            try:
                if not stat.S_ISREG(dst.lstat().st_mode):
                    continue
            except FileNotFoundError:
                pass
            os.replace(src, dst)
            note_written(dst)
        except OSError:
            continue
    (folder / MANIFEST).unlink()


def sweep_stale(parent: Path) -> list[Path]:
    """Remove temp folders in ``parent`` that this user made and whose owning process is
    gone. A folder is ours when it is a real folder (not a symlink) owned by this user,
    mode 0700, whose name carries a valid signature (``_owner_of``); anything else is
    never read or touched, and no path found inside is followed out of the folder."""
    removed: list[Path] = []
    try:
        candidates = [p for p in parent.iterdir() if p.name.startswith(PREFIX)]
    except OSError:
        return removed
    for folder in candidates:
        try:
            st = folder.lstat()
        except OSError:
            continue
        if (
            not stat.S_ISDIR(st.st_mode)
            or st.st_uid != os.getuid()
            or stat.S_IMODE(st.st_mode) != 0o700
        ):
            continue
        owner = _owner_of(folder)
        if owner is None or _alive(*owner):
            continue
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            if (folder / MANIFEST).exists():  # killed while publishing: finish it
                _finish_publish(folder)
        shutil.rmtree(folder, ignore_errors=True)  # fd-based: never follows a symlink
        removed.append(folder)
    return removed
