"""Where a run directory's files live: a local `Path`, or a `UrlPath` on an fsspec filesystem (`s3://`, `gs://`,
`az://`, ...), so that nodes that share no POSIX mount work on one run (README: On object storage).

`as_path` is the one place a user's string becomes either. A `UrlPath` offers the few `pathlib` methods the run
code uses, with object-store semantics: a file is written once as a whole object (one PUT, or a multipart upload
that appears only when complete: never a rename), `create` is an exclusive create (S3's `If-None-Match: *`), and
directories do not exist apart from their files. It has no `__fspath__`: code that would hand it to `open()` or
`os` fails loudly instead of writing to a local folder named `s3:`. `file://` URLs are plain local paths.

Credentials and endpoints come from the usual environment of each process (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_PROFILE, ~/.aws, GOOGLE_APPLICATION_CREDENTIALS, ...): fsspec's filesystems read them."""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath
from typing import IO, Any

from ..recipe.params import ConfigError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_MANGLED = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/(?!/)")  # Path("s3://b/k") == Path("s3:/b/k")


def is_url(text: str | PurePath) -> bool:
    return isinstance(text, str) and bool(_SCHEME.match(text))


def as_path(value: str | PurePath | UrlPath) -> Path | UrlPath:
    """A local Path for a path or a file:// URL; a UrlPath for any other URL. A URL whose filesystem is not
    installed is a ConfigError naming the package to install, raised before anything is written."""
    if isinstance(value, (UrlPath, Path)) and not _MANGLED.match(str(value)):
        return value
    text = str(value)
    if _MANGLED.match(text) and not is_url(text):
        scheme = _MANGLED.match(text).group(1)  # type: ignore[union-attr]
        if len(scheme) > 1:  # not a Windows drive
            raise ConfigError(f"{text!r} looks like a {scheme}:// URL that went through a local path (one '/' "
                              f"was lost): pass the URL as a string, e.g. {scheme}://{text[len(scheme) + 2:]}")
    match = _SCHEME.match(text)
    if match is None:
        return Path(text)
    scheme = match.group(1).lower()
    if scheme in ("file", "local"):
        return Path(text[match.end():] or "/")
    return UrlPath(scheme, text[match.end():].rstrip("/"))


def filesystem(scheme: str) -> Any:
    """The fsspec filesystem for a scheme (fsspec caches instances), or a ConfigError naming what to install."""
    import fsspec
    from fsspec.registry import known_implementations

    try:
        return fsspec.filesystem(scheme)
    except ImportError as exc:
        spec = known_implementations.get(scheme, {})
        package = spec.get("class", "").split(".")[0] or "the package that provides it"
        raise ConfigError(f"{scheme}:// needs a filesystem package that is not installed: pip install {package} "
                          f"({exc})") from None
    except ValueError:
        raise ConfigError(f"{scheme}:// is not a filesystem fsspec knows (known: "
                          f"{', '.join(sorted(k for k in known_implementations if len(k) > 1)[:12])}, ...)") from None


@dataclass(frozen=True)
class _Stat:
    st_size: int


class UrlPath:
    """A file or folder on an fsspec filesystem, addressed as `scheme://path` (its `str`)."""

    __slots__ = ("fs", "path", "scheme")

    def __init__(self, scheme: str, path: str) -> None:
        self.scheme, self.path = scheme, path
        self.fs = filesystem(scheme)

    # ------------------------------------------------------------------------------------------ names

    def __str__(self) -> str:
        return f"{self.scheme}://{self.path}"

    def __repr__(self) -> str:
        return f"UrlPath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UrlPath) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __reduce__(self) -> tuple:  # pickled by name: a worker builds its own filesystem from its environment
        return (UrlPath, (self.scheme, self.path))

    def __truediv__(self, other: str | PurePath) -> UrlPath:
        part = PurePosixPath(str(other))
        if part.is_absolute() or ".." in part.parts:
            raise ValueError(f"{other!r} is not a relative path inside {self}")
        return UrlPath(self.scheme, f"{self.path}/{part.as_posix()}")

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    @property
    def parent(self) -> UrlPath:
        return UrlPath(self.scheme, str(PurePosixPath(self.path).parent))

    def with_name(self, name: str) -> UrlPath:
        return self.parent / name

    def relative_to(self, other: UrlPath) -> PurePosixPath:
        return PurePosixPath(self.path).relative_to(other.path)

    def resolve(self) -> UrlPath:
        return self

    absolute = expanduser = resolve

    # ------------------------------------------------------------------------------------------ reading

    def _fresh(self) -> None:
        """Another node may have written since this process listed: never answer from a cached listing."""
        self.fs.invalidate_cache(self.path)

    def is_file(self) -> bool:
        self._fresh()
        return bool(self.fs.isfile(self.path))

    def is_dir(self) -> bool:
        self._fresh()
        return bool(self.fs.isdir(self.path))

    def exists(self) -> bool:
        self._fresh()
        return bool(self.fs.exists(self.path))

    def stat(self) -> _Stat:
        self._fresh()
        return _Stat(int(self.fs.size(self.path)))

    def read_bytes(self) -> bytes:
        return self.fs.cat_file(self.path)

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def open(self, mode: str = "rb") -> IO[bytes]:
        if mode not in ("rb", "r"):
            raise ValueError("a UrlPath opens for reading only: write whole objects with write_bytes or put")
        return self.fs.open(self.path, "rb")

    def glob(self, pattern: str) -> list[UrlPath]:
        self._fresh()
        return sorted(UrlPath(self.scheme, n) for n in self.fs.glob(f"{self.path}/{pattern}"))

    def __lt__(self, other: UrlPath) -> bool:
        return str(self) < str(other)

    # ------------------------------------------------------------------------------------------ writing

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing to do: an object store's folders are the prefixes of its objects."""

    def write_bytes(self, blob: bytes) -> int:
        """One whole object: readers see the old object or the new one, never a part."""
        self.fs.pipe_file(self.path, blob)
        return len(blob)

    def write_text(self, text: str, encoding: str = "utf-8") -> int:
        return self.write_bytes(text.encode(encoding))

    def create(self, blob: bytes) -> None:
        """Write the object only if none exists (an exclusive create); FileExistsError if one does."""
        try:
            self.fs.pipe_file(self.path, blob, mode="create")
        except FileExistsError:
            raise
        except (TypeError, NotImplementedError) as exc:
            raise ConfigError(f"{self.scheme}:// offers no exclusive create ({exc}): a run directory needs one so "
                              "that concurrent planners agree") from None

    def put(self, local: Path) -> None:
        """Upload a local file as this object (one PUT, or a multipart upload that appears when complete)."""
        self.fs.put_file(str(local), self.path)

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.rm_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise


def spool(suffix: str = "") -> tuple[int, str]:
    """A local temporary file (in TMPDIR, never in the run directory) to build an object in before its upload."""
    return tempfile.mkstemp(prefix="scalequest-", suffix=suffix)


__all__ = ["UrlPath", "as_path", "filesystem", "is_url", "spool"]
