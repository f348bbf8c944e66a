"""The input folder walked entry by entry, and each photo decoded and validated: EXIF
orientation, sRGB, 8-bit RGB, or the reason it is rejected."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from pipeline.store.hashes import HashCache

IMAGES_JSON = "images.json"
REJECTS_JSON = "rejects.json"
UNUSABLE_JSON = "unusable.json"
ID_DIGITS = 16  # a photo's id: the first hex digits of the sha256 of its file


class Rejected(ValueError):
    """The file cannot be used; the message is the reason shown to the user."""


@dataclass(frozen=True)
class HRImage:
    """An accepted photo: content id, size, sha256 of the file, and the ICC profile it was
    converted to sRGB from (None: sRGB or untagged). Where it was found is the Listing's
    business: the same bytes anywhere are the same photo."""

    id: str
    width: int
    height: int
    sha256: str
    converted_from: str | None = None


@dataclass(frozen=True)
class InputEntry:
    """One entry found below the input folder: a regular file to decode (`problem` None), or
    something that cannot be built, with the reason (`problem`)."""

    path: Path
    problem: str | None = None


def _link_problem(path: Path) -> str | None:
    """Why a symbolic link cannot be built (None when it points at a regular file)."""
    try:
        target = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symbolic link loop (the links point at each other)"
        if e.errno == errno.ENOENT:
            return f"dangling symbolic link (its target {os.readlink(path)!r} does not exist)"
        return f"symbolic link that cannot be followed: {e.strerror}"
    if stat.S_ISDIR(target.st_mode):
        return "symbolic link to a folder: not followed (link or copy the photos themselves)"
    return _kind_problem(target.st_mode)


def _kind_problem(mode: int) -> str | None:
    """Why an entry of this stat mode is not a photo file (None for a regular file)."""
    if stat.S_ISREG(mode):
        return None
    kinds = {stat.S_ISFIFO: "a FIFO (named pipe)", stat.S_ISSOCK: "a socket",
             stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device"}
    kind = next((name for test, name in kinds.items() if test(mode)), "a special file")
    return f"not a regular file: {kind}"


def walk_inputs(folder: Path) -> list[InputEntry]:
    """Every entry below `folder`, sorted by path bytes: regular files (and links to them) to
    decode, and everything else with the reason it is not built: hidden names (skipped, a
    hidden folder is listed once), links that loop, dangle or point at a folder, FIFOs,
    sockets, devices, empty folders and folders that cannot be read. Sub-folders are walked."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"input folder {folder} does not exist")
    found: list[InputEntry] = []

    def visit(directory: Path) -> None:
        try:
            children = sorted(os.scandir(directory), key=lambda e: os.fsencode(e.name))
        except OSError as e:
            found.append(InputEntry(directory, f"folder cannot be read: {e.strerror}"))
            return
        if not children and directory != folder:
            found.append(InputEntry(directory, "empty folder: nothing to build"))
        for child in children:
            path = Path(child.path)
            if child.name.startswith("."):
                kind = "folder" if child.is_dir(follow_symlinks=False) else "file"
                found.append(InputEntry(path, f"hidden {kind} (name starts with a dot): skipped"))
            elif child.is_symlink():
                found.append(InputEntry(path, _link_problem(path)))
            elif child.is_dir(follow_symlinks=False):
                visit(path)
            else:
                found.append(InputEntry(path, _kind_problem(child.stat(follow_symlinks=False)
                                                            .st_mode)))

    visit(folder)
    return found


def folder_fingerprint(folder: Path, hashes: HashCache) -> list[list]:
    """(relative path, sha256 of the content) of every input file, (relative path, reason) of
    every other entry: changes when a photo is added, edited or renamed, or an entry appears
    or goes; not when a file is only touched or copied elsewhere (`hashes` re-hashes a file
    only when its size or mtime changed)."""
    rows = []
    for entry in walk_inputs(folder):
        name = os.fsdecode(entry.path.relative_to(folder))
        try:
            rows.append([name, entry.problem if entry.problem is not None
                         else hashes.sha256(entry.path)])
        except OSError as e:
            rows.append([name, f"cannot be read: {e.strerror}"])
    hashes.save()
    return rows


@dataclass(frozen=True)
class Listing:
    """An input folder by content: `photos` maps each content id to its file (the first in
    walk order when several files hold the same bytes), and `rejects` lists every other entry
    as {"source", "reason"} (not a photo file, cannot be read, a duplicate). Sources are paths
    relative to the folder (os.fsdecode)."""

    folder: Path
    photos: dict[str, Path]
    rejects: list[dict]

    def source(self, image_id: str) -> str:
        """The photo's path relative to the folder."""
        return os.fsdecode(self.photos[image_id].relative_to(self.folder))


def list_folder(folder: Path, hashes: HashCache) -> Listing:
    """Walk `folder` and identify each file by its content (`hashes` re-hashes a file only
    when its size or mtime changed): the Listing."""
    folder = Path(folder)
    photos: dict[str, Path] = {}
    rejects: list[dict] = []
    for entry in walk_inputs(folder):
        name = os.fsdecode(entry.path.relative_to(folder))
        try:
            if entry.problem is not None:
                raise Rejected(entry.problem)
            try:
                image_id = hashes.sha256(entry.path)[:ID_DIGITS]
            except OSError as e:
                raise Rejected(f"cannot be read: {e.strerror}") from None
            if image_id in photos:
                raise Rejected(f"duplicate of {os.fsdecode(photos[image_id].relative_to(folder))}")
        except Rejected as reason:
            rejects.append({"source": name, "reason": str(reason)})
            continue
        photos[image_id] = entry.path
    hashes.save()
    return Listing(folder, photos, rejects)


def _to_rgb(img: Image.Image, alpha: str) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        grey = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or grey.max() > 255 else 255.0
        grey = np.clip(np.rint(grey * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode == "F":
        raise Rejected(f"floating-point image mode {img.mode!r} is not supported")
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        if alpha == "reject":
            raise Rejected("image has an alpha channel (IngestHR alpha = reject)")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


# Colour spaces that ImageCms converts to sRGB (the mode of the decoded image -> the profile's).
_PROFILE_SPACES = {"RGB": "RGB", "RGBA": "RGB", "CMYK": "CMYK", "L": "GRAY"}
_SRGB = ImageCms.createProfile("sRGB")


def _to_srgb(img: Image.Image) -> tuple[Image.Image, str | None]:
    """Convert an image carrying a non-sRGB ICC profile to sRGB (perceptual intent, Pillow's
    ImageCms / LittleCMS). Returns the image and the description of the profile it was
    converted from (None when it has no profile or an sRGB one, kept as it is)."""
    icc = img.info.get("icc_profile")
    if not icc:
        return img, None
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except (OSError, ImageCms.PyCMSError) as e:
        raise Rejected(f"unreadable embedded ICC colour profile: {e}") from None
    name = (ImageCms.getProfileDescription(source) or "").strip() or "unnamed profile"
    if "srgb" in name.lower():
        return img, None
    space = source.profile.xcolor_space.strip()
    if _PROFILE_SPACES.get(img.mode) != space:
        raise Rejected(f"embedded ICC profile {name!r} is for {space} data but the image is "
                       f"{img.mode}: its colours cannot be converted to sRGB")
    out_mode = "RGBA" if img.mode == "RGBA" else "RGB"
    return ImageCms.profileToProfile(img, source, _SRGB, outputMode=out_mode), name


@dataclass(frozen=True)
class Photo:
    """A decoded photo: `rgb` uint8 sRGB HWC, upright; `converted_from` the description of
    the embedded ICC profile it was converted from, None when it was sRGB or untagged."""

    rgb: np.ndarray
    converted_from: str | None = None


def decode_hr(path: Path, min_side: int, max_pixels: int, alpha: str = "composite") -> Photo:
    """Decode one photo to uint8 sRGB HWC, upright by its EXIF orientation, converted to sRGB
    when an embedded ICC profile says it is in another colour space (Display P3, Adobe RGB…).

    Raises Rejected with the reason when the file cannot be read, is not an image, is
    truncated or corrupt, is smaller than `min_side` on its short side, or has more than
    `max_pixels` pixels (checked from the header, before decoding, against decompression bombs).
    """
    try:
        if Path(path).stat().st_size == 0:
            raise Rejected("empty file")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise Rejected(f"{w}x{h} = {w * h} pixels is above max_pixels={max_pixels}")
                img.load()
                img, converted_from = _to_srgb(ImageOps.exif_transpose(img))
                rgb = _to_rgb(img, alpha)
    except Rejected:
        raise
    except PermissionError as e:
        raise Rejected(f"cannot be read: {e.strerror}") from None
    except UnidentifiedImageError:
        raise Rejected("not an image (no decoder recognises it)") from None
    except Image.DecompressionBombError as e:
        raise Rejected(f"decompression bomb: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise Rejected(f"corrupt or truncated image: {e}") from None
    if min(rgb.shape[:2]) < min_side:
        raise Rejected(f"{rgb.shape[1]}x{rgb.shape[0]} is smaller than min_side={min_side}")
    return Photo(rgb, converted_from)


def content_id(path: Path) -> tuple[str, str]:
    """(image id, sha256) of a file: the id is the first 16 hex digits of its sha256.
    Raises Rejected when the file cannot be read."""
    try:
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as e:
        raise Rejected(f"cannot be read: {e.strerror}") from None
    return digest[:ID_DIGITS], digest


def display_path(source: str) -> str:
    """A stored source path as text for people: bytes that are not UTF-8 are shown as \\xNN
    (the stored path keeps them; `os.fsencode(source)` gives the original bytes)."""
    return os.fsencode(source).decode("utf-8", "backslashreplace")


def read_images(stage_dir: Path) -> list[HRImage]:
    """The accepted images listed by an IngestHR output folder."""
    rows = json.loads((Path(stage_dir) / IMAGES_JSON).read_text())
    return [HRImage(**row) for row in rows]


def read_rejects(stage_dir: Path) -> list[dict]:
    """[{"source": path, "reason": text}, ...]: the entries a stage could not use."""
    return json.loads((Path(stage_dir) / REJECTS_JSON).read_text())


def read_unusable(stage_dir: Path) -> list[dict]:
    """[{"image_id": id, "reason": text}, ...] from an IngestHR output folder: the photos of
    its chunk that could not be decoded or used."""
    return json.loads((Path(stage_dir) / UNUSABLE_JSON).read_text())
