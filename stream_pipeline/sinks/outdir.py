"""The output folder: checked before a run, and one error type when writing to it fails."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from stream_pipeline.core.errors import OutputError


def output_error(path: Path, exc: OSError) -> OutputError:
    """One readable line for a failed write (`No space left on device`, `Read-only file system`...)."""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOTDIR or (exc.errno == errno.EEXIST and not path.is_dir()):
        reason = "a file is in the way (not a folder)"
    return OutputError(f"cannot write output {path}: {reason}")


def prepare_out_dir(out: Path) -> None:
    """Create `out` and prove a file can be written there, before any model is loaded."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=out)
        try:
            os.write(fd, b"stream-pipeline write test\n")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise output_error(out, exc) from None
