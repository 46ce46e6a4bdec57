"""Downloading and extracting dataset archives safely: resumable, retried, MD5-checked, checked tar members.

fetch_archives() is what every downloadable dataset (oxford_pets.py, voc.py) calls. Only urllib: a partial file
NAME.part is resumed with an HTTP Range request, transient errors are retried with backoff, the MD5 is checked
before the archive gets its final name, and every tar member is checked before it is written (no absolute paths,
no '..', no links leading out, no devices) into a temporary folder that is renamed into place; a stamp file
marks a finished extraction so a killed one is redone.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import posixpath
import re
import shutil
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath

from tqdm import tqdm

from ..atomic import is_disk_full
from ..errors import SeglabError

# Seconds to wait before each retry of a transient error; len() + 1 tries in all. Tests set it to zeros.
_RETRY_DELAYS: tuple[float, ...] = (1, 2, 4)
_TIMEOUT = 60  # seconds without a byte before a connection counts as stalled (then retried)
_CHUNK = 1 << 20
_USER_AGENT = "seglab/0.1 (Python urllib)"


class _Transient(Exception):
    """A network error worth retrying (connection lost, timeout, HTTP 5xx/429); the .part file is kept."""



def fetch_archives(
    archives: Mapping[str, str], root: Path, base_url: str, url_env: str, quiet: bool = False, space: str = "1 GB"
) -> None:
    """Download (name -> MD5) archives from base_url/NAME into root and extract each there.

    An archive already extracted (its stamp file is there) or already downloaded with the right MD5 is not
    downloaded again. url_env names the environment variable that sets a mirror (quoted in messages); space is
    the disk space the dataset needs (quoted when the disk is full).
    """
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SeglabError(
            f"cannot create the data folder {root} ({e}); choose another with --data-root or SEGLAB_DATA"
        ) from None
    for name, md5 in archives.items():
        if _extracted(root, name, md5):
            continue
        archive = root / name
        url = f"{base_url.rstrip('/')}/{name}"
        if archive.exists() and _md5(archive) != md5:
            # Not one we verified (we only rename verified files into place): fetch it again.
            archive.unlink()
        if not archive.exists():
            part = root / (name + ".part")
            _download(url, part, quiet, url_env, space)
            got = _md5(part)
            if got != md5:
                part.unlink()
                raise SeglabError(
                    f"MD5 mismatch for {url}: got {got}, expected {md5}. The downloaded file {part} was "
                    "deleted; run the download again (if it keeps failing, the server or mirror serves a "
                    "different file)."
                )
            os.replace(part, archive)
        _extract(archive, root, md5, quiet, set(archives), space)


def _download(url: str, part: Path, quiet: bool, url_env: str, space: str) -> None:
    """Fetch url into part, resuming what part already holds; retry transient errors with backoff."""
    tries = len(_RETRY_DELAYS) + 1
    for attempt in range(tries):
        try:
            _fetch_once(url, part, quiet, url_env, space)
            return
        except _Transient as e:
            if attempt == tries - 1:
                raise SeglabError(
                    f"could not download {url} after {tries} tries: {e}. Check the connection and run the "
                    f"download again (it resumes from {part}), or set a mirror with {url_env}."
                ) from None
            time.sleep(_RETRY_DELAYS[attempt])


def _fetch_once(url: str, part: Path, quiet: bool, url_env: str, space: str) -> None:
    have = part.stat().st_size if part.exists() else 0
    try:
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    except ValueError as e:  # a malformed URL, e.g. a mirror without http:// or https://
        raise SeglabError(f"bad download URL {url!r} ({e}); check the mirror argument or {url_env}") from None
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=_TIMEOUT)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            # Our range starts at or past the end: the .part is complete if its size is the file's size.
            total = _content_range(e.headers.get("Content-Range"))[2]
            e.close()
            if total == have:
                return
            part.unlink()  # longer than the file, or the size is unknown: start again from zero
            return _fetch_once(url, part, quiet, url_env, space)
        e.close()
        if e.code >= 500 or e.code == 429:
            raise _Transient(f"HTTP {e.code} {e.reason}") from None
        raise SeglabError(
            f"HTTP {e.code} {e.reason} for {url}; check the URL (mirror argument or {url_env})"
        ) from None
    except ValueError as e:  # a malformed URL, e.g. a mirror without https://
        raise SeglabError(f"bad download URL {url!r} ({e}); check the mirror argument or {url_env}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise _Transient(f"{type(e).__name__}: {getattr(e, 'reason', e)}") from None

    with response:
        if response.status == 206:
            start, _, total = _content_range(response.headers.get("Content-Range"))
            if start != have:  # not the range we asked for: throw the partial file away and start again
                part.unlink()
                raise _Transient(f"the server answered range start {start} to a request for {have}")
            mode = "ab"
        else:
            # 200: the server ignored Range (or we sent none) and sends the whole file from byte 0.
            have, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        done = have
        try:
            f = open(part, mode)  # noqa: SIM115 (closed by the with just below)
        except OSError as e:  # permissions, a read-only or full disk
            raise _write_error(e, part, space) from None
        with f, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.name[: -len(".part")], disable=quiet, leave=False,
        ) as bar:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (OSError, http.client.HTTPException) as e:  # reset, timeout, IncompleteRead ...
                    lost = f"connection lost after {done} bytes ({type(e).__name__}: {e})"
                    raise _Transient(lost) from None
                if not chunk:
                    break
                try:
                    f.write(chunk)
                    f.flush()  # so a full disk shows here, not in close(), and a kill keeps what arrived
                except OSError as e:
                    raise _write_error(e, part, space) from None
                done += len(chunk)
                bar.update(len(chunk))
        if total is not None and done < total:
            raise _Transient(f"connection closed after {done} of {total} bytes")


def _content_range(header: str | None) -> tuple[int | None, int | None, int | None]:
    """'bytes START-END/TOTAL' or 'bytes */TOTAL' -> (start, end, total), None where absent."""
    m = re.match(r"\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)", header or "")
    if not m:
        return None, None, None
    start, end, total = (int(v) if v and v.isdigit() else None for v in m.groups())
    return start, end, total


def _write_error(e: OSError, path: Path, space: str) -> SeglabError:
    if is_disk_full(e):
        return SeglabError(
            f"the disk is full while writing {path}. Free some space (the dataset needs about {space} with "
            "its archives) or choose another folder with --data-root or SEGLAB_DATA; a download resumes "
            "where it stopped."
        )
    return SeglabError(f"cannot write {path} ({e}); choose another folder with --data-root or SEGLAB_DATA")


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- extraction


def _stamp(root: Path, archive_name: str) -> Path:
    return root / f".{archive_name}.extracted"


def _extracted(root: Path, archive_name: str, md5: str) -> bool:
    """Whether this archive (this MD5) was fully extracted into root and its folders are still there."""
    try:
        stamp = json.loads(_stamp(root, archive_name).read_text())
        return stamp["md5"] == md5 and all((root / entry).exists() for entry in stamp["entries"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _extract(archive: Path, root: Path, md5: str, quiet: bool, names: set[str], space: str) -> None:
    """Extract archive into root via a temporary folder; refuse any unsafe member (SeglabError naming it)."""
    tmp = root / f".extract-{archive.name}"
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed extraction
    reserved = {tmp.name, archive.name, archive.name + ".part", _stamp(root, archive.name).name, *names}
    reserved |= {n + ".part" for n in names} | {_stamp(root, n).name for n in names}
    # tarfile's own "data" filter (Python 3.11.4+) is a second guard behind our checks: it also resolves
    # links against the files already written.
    options = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    try:
        tmp.mkdir()
        with tarfile.open(archive, "r:*") as tar, tqdm(
            desc=f"extracting {archive.name}", unit=" files", disable=quiet, leave=False
        ) as bar:
            tar.errorlevel = 1  # raise on fatal errors instead of only logging them
            tar.extractall(tmp, members=_checked_members(tar, archive, reserved, bar), **options)
        entries = sorted(p.name for p in tmp.iterdir())
        for entry in entries:
            target = root / entry
            if target.is_symlink() or target.is_file():
                target.unlink()
            elif target.exists():
                shutil.rmtree(target)  # an older or half-replaced copy
            os.replace(tmp / entry, target)
        _stamp(root, archive.name).write_text(json.dumps({"md5": md5, "entries": entries}))
    except SeglabError:
        raise
    except tarfile.TarError as e:
        member = getattr(getattr(e, "tarinfo", None), "name", None)
        raise SeglabError(
            f"refusing to extract {archive}: " + (f"member {member!r}: " if member else "") + f"{e}. "
            "Delete the archive and download it again."
        ) from None
    except (EOFError, OSError) as e:
        if isinstance(e, OSError) and is_disk_full(e):
            raise SeglabError(
                f"the disk is full while extracting {archive} into {root}. Free some space (about {space}) or "
                "choose another folder with --data-root or SEGLAB_DATA, then run the download again."
            ) from None
        raise SeglabError(
            f"could not extract {archive} into {root} ({e}). If the archive is damaged, delete it and "
            "download it again."
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _checked_members(
    tar: tarfile.TarFile, archive: Path, reserved: set[str], bar: tqdm
) -> Iterator[tarfile.TarInfo]:
    """Yield the members of tar one at a time, each checked before tarfile writes it."""
    links: set[str] = set()  # symlinks seen so far: no later member may be written through one
    for member in tar:
        if not PurePosixPath(member.name.replace("\\", "/")).parts:
            continue  # the archive's own top folder ("./"), already there
        reason = _unsafe(member, links, reserved)
        if reason:
            raise SeglabError(
                f"refusing to extract {archive}: member {member.name!r} {reason}. This is not the official "
                "archive; delete it and download it again from the official site."
            )
        bar.update(1)
        yield member


def _unsafe(member: tarfile.TarInfo, links: set[str], reserved: set[str]) -> str | None:
    """Why a tar member must not be extracted, or None when it is safe."""
    name = member.name
    if name.startswith(("/", "\\")) or PureWindowsPath(name).drive or os.path.isabs(name):
        return "is an absolute path"
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if ".." in parts:
        return "contains '..'"
    if parts[0] in reserved:
        return "would overwrite seglab's own download files"
    if member.ischr() or member.isblk() or member.isfifo():
        return "is a device or FIFO file"
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        return "is not a regular file, folder or link"
    for i in range(1, len(parts)):
        if "/".join(parts[:i]) in links:
            return f"would be written through the symlink {'/'.join(parts[:i])!r}"
    if member.issym() or member.islnk():
        target = member.linkname
        if target.startswith(("/", "\\")) or PureWindowsPath(target).drive or os.path.isabs(target):
            return f"is a link to the absolute path {target!r}"
        # A symlink is relative to its own folder, a hard link to the archive's top.
        start = posixpath.dirname("/".join(parts)) if member.issym() else ""
        resolved = posixpath.normpath(posixpath.join(start, target.replace("\\", "/")))
        if resolved == ".." or resolved.startswith("../"):
            return f"is a link pointing outside the target folder ({target!r})"
        if member.issym():
            links.add("/".join(parts))
    return None

