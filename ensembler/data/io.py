"""File helpers: atomic writes, content hashes, and CSVs read as text.

Every file `ens` writes goes through `atomic_write`: the bytes land in a temporary file beside
the target and are renamed over it only when complete, so an interrupted run never leaves a
half-written file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from ..errors import EnsError

if TYPE_CHECKING:
    import pandas as pd


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: Path, *, overwrite: bool = True) -> Iterator[BinaryIO]:
    """Open a temporary file beside `path`; on clean exit, rename it to `path`.

    With ``overwrite=False`` the rename is refused (`FileExistsError`) when `path` appeared in
    the meantime; callers check for existing outputs up front to give a friendly error.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a team shares these files like any other
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if path exists, unlike rename
            os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(path: Path, data: bytes, *, overwrite: bool = True) -> None:
    """Write `data` to `path` atomically."""
    with atomic_write(path, overwrite=overwrite) as handle:
        handle.write(data)


def write_json(path: Path, obj: Any, *, overwrite: bool = True) -> None:
    """Write `obj` as indented JSON to `path` atomically."""
    write_bytes(path, (json.dumps(obj, indent=2, default=str) + "\n").encode(), overwrite=overwrite)


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of the file at `path`, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


FLOAT_WIDTH = 14  # "d.dddddddde±xx"


def format_float32(values: np.ndarray) -> np.ndarray:
    """Finite, non-negative float32 values as fixed-width decimal text: ``(..., 14)`` uint8 ASCII.

    Nine significant digits in scientific notation (``9.56209302e-02``), which reads back as the
    same float32 for every value (float32 needs at most nine; the mantissa is rounded in float64,
    whose error is far below the nine-digit step, so the rounding is the correct one). About 5x
    faster than numpy's shortest-repr ``astype(str)``, which ``DataFrame.to_csv`` uses.
    """
    x = np.asarray(values, dtype=np.float32).astype(np.float64)
    zero = x == 0
    x = np.where(zero, 1.0, x)
    exponent = np.floor(np.log10(x)).astype(np.int64)
    mantissa = np.rint(x / 10.0**exponent * 1e8).astype(np.int64)
    low = mantissa < 100_000_000  # log10 rounded up across a power of ten
    exponent -= low
    mantissa = np.where(low, np.rint(x / 10.0**exponent * 1e8).astype(np.int64), mantissa)
    high = mantissa >= 1_000_000_000  # rounding carried into a tenth digit
    exponent += high
    mantissa = np.where(high, 100_000_000, mantissa)
    mantissa, exponent = np.where(zero, 0, mantissa), np.where(zero, 0, exponent)
    digits = (mantissa[..., None] // 10 ** np.arange(8, -1, -1)) % 10 + ord("0")
    out = np.empty(x.shape + (FLOAT_WIDTH,), dtype=np.uint8)
    out[..., 0] = digits[..., 0]
    out[..., 1] = ord(".")
    out[..., 2:10] = digits[..., 1:]
    out[..., 10] = ord("e")
    out[..., 11] = np.where(exponent < 0, ord("-"), ord("+"))
    out[..., 12] = np.abs(exponent) // 10 + ord("0")
    out[..., 13] = np.abs(exponent) % 10 + ord("0")
    return out


def csv_rows(prefixes: list[str], values: np.ndarray) -> bytes:
    """CSV lines ``prefix + values``: each prefix (its leading fields with their trailing comma)
    followed by the row of `values` ``(n, k)`` in `format_float32`'s form."""
    n, k = values.shape
    block = np.empty((n, k, FLOAT_WIDTH + 1), dtype=np.uint8)
    block[..., :FLOAT_WIDTH] = format_float32(values)
    block[..., FLOAT_WIDTH] = ord(",")
    block[:, -1, FLOAT_WIDTH] = ord("\n")
    rows = block.reshape(n, -1)
    return b"".join(prefix.encode() + row.tobytes() for prefix, row in zip(prefixes, rows))


def read_table(path: Path, columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """A CSV as text columns (nothing parsed as NaN); unreadable or lacking `columns` is an error."""
    import pandas as pd

    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise EnsError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise EnsError(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(table.columns)}")
    return table
