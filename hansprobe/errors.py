"""One exception family, so the CLI can turn every expected failure into one line and exit code 2."""


class HansprobeError(Exception):
    """Base class: the message is one line that says what went wrong and what to do."""


class TaskError(HansprobeError, ValueError):
    """Impossible task parameters or malformed task data (NTF lines)."""


class ConfigError(HansprobeError, ValueError):
    """A model, training or analysis option that cannot work."""


class CheckpointError(HansprobeError):
    """A checkpoint directory that is missing, incomplete, corrupt or unsafe to load."""


class OutputError(HansprobeError):
    """An output path that cannot be written (a directory where a file goes, no such parent
    directory, no permission, a full disk); the message names the path."""


class ResourceError(HansprobeError):
    """A request that would need more memory than this machine has; nothing was allocated."""


def os_error_line(e: OSError, path, doing: str = "write") -> str:
    """One line for an OS error on `path` that says what to do about the common causes."""
    import errno

    what = {
        errno.ENOSPC: "the disk is full; free space and run again",
        errno.EDQUOT: "the disk quota is exceeded; free space and run again",
        errno.EACCES: "permission denied; choose a path you can write",
        errno.EPERM: "operation not permitted; choose a path you can write",
        errno.EROFS: "the file system is read-only; choose another path",
        errno.EISDIR: "it is a directory; give a file path",
        errno.ENOTDIR: "a part of the path is a file, not a directory; choose another path",
        errno.EEXIST: "a part of the path is a file, not a directory; choose another path",
    }.get(e.errno, e.strerror or type(e).__name__)
    if e.errno == errno.ENOENT:
        from pathlib import Path

        parent = Path(path).parent
        what = ("its directory does not exist; create it first or choose another path" if not parent.is_dir()
                else f"files cannot be created in {parent}; choose another path")
    return f"cannot {doing} {path}: {what}"


def shown(text) -> str:
    """Text as a terminal, a log line or a JSON file may carry it: control characters (an ESC that
    would drive the terminal, a newline that would split a line) and the bytes of a file name that
    are not UTF-8 (Python's surrogate escapes, which no UTF-8 writer accepts) written as escapes,
    \\n, \\x1b, \\xff; everything else as it is."""
    import unicodedata

    out = []
    for ch in str(text):
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:  # a byte that was not UTF-8 (os.fsdecode's surrogateescape)
            out.append(f"\\x{o - 0xDC00:02x}")
        elif ch in "\n\r\t":
            out.append(repr(ch)[1:-1])
        elif unicodedata.category(ch) in ("Cc", "Cs"):
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}")
        else:
            out.append(ch)
    return "".join(out)

