"""TABLE_NAME: a name for nra's table id in iproute2's `rt_tables.d`, so `ip rule` and
`ip route show table <name>` on the node show it (what the Node.js README asked operators
to do by hand).

nra itself addresses the table by number over netlink; the name is only for people reading
`ip` output. When the directory exists (on a cluster: the node's
/etc/iproute2/rt_tables.d mounted into the pod), nra writes one file there, `nra.conf`,
marked as its own, and CLEANANDEXIT removes it. A file of that name nra did not write is
never overwritten or removed.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from loguru import logger

RT_TABLES_D = Path("/etc/iproute2/rt_tables.d")
FILE_NAME = "nra.conf"
MARK = "# written by nra (TABLE_NAME); CLEANANDEXIT removes it\n"
# Names iproute2 gives the kernel's own tables (and `all`, which `ip` reads as a keyword).
RESERVED = {"unspec", "default", "main", "local", "all"}
# iproute2 reads `<id> <name>` lines and takes a token starting with a digit as an id.
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,62}")


class TableNameError(ValueError):
    """A name or file nra refuses; str() is the one line shown."""


def check_name(name: str) -> str:
    text = name.strip()
    if not NAME.fullmatch(text):
        raise TableNameError(f"table name {name[:64]!r}: use letters, digits, _ . - (not starting with a digit), "
                             f"at most 63 characters")
    if text.lower() in RESERVED:
        raise TableNameError(f"table name {text!r} is iproute2's name of another table")
    return text


def file_text(table: int, name: str) -> str:
    return f"{MARK}{table}\t{check_name(name)}\n"


def _ours(path: Path) -> bool:
    try:
        with path.open() as f:
            return f.readline() == MARK
    except FileNotFoundError:
        return False


def conflicts(table: int, name: str, directory: Path = RT_TABLES_D) -> list[str]:
    """Other entries of iproute2's tables (rt_tables beside the directory, other *.conf in
    it) that give this id another name or this name another id."""
    found = []
    files = [directory.parent / "rt_tables", *sorted(directory.glob("*.conf"))]
    for path in files:
        if path.name == FILE_NAME and path.parent == directory or not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            fields = line.split("#", 1)[0].split()
            if len(fields) < 2:
                continue
            try:
                other_id = int(fields[0], 0)
            except ValueError:
                continue
            if (other_id == table) != (fields[1] == name):
                found.append(f"{path}:{number}: {other_id} {fields[1]}")
    return found


def write_table_name(table: int, name: str, directory: Path = RT_TABLES_D) -> Path | None:
    """Write `<table> <name>` to directory/nra.conf (atomically, only if it changes).

    None when the directory does not exist (not mounted): nothing to do. Raises
    TableNameError for a bad name or an nra.conf that nra did not write."""
    text = file_text(table, name)
    if not directory.is_dir():
        return None
    path = directory / FILE_NAME
    if path.exists():
        if not _ours(path):
            raise TableNameError(f"{path} exists and was not written by nra; left as it is")
        if path.read_text() == text:
            return path
    fd, tmp = tempfile.mkstemp(prefix=f".{FILE_NAME}.", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_table_name(directory: Path = RT_TABLES_D) -> bool:
    """Remove directory/nra.conf if nra wrote it; True when a file was removed."""
    path = directory / FILE_NAME
    if not _ours(path):
        return False
    path.unlink(missing_ok=True)
    return True


def name_table(table: int, name: str | None, directory: Path = RT_TABLES_D) -> Path | None:
    """At start (daemon, ONESHOT): write the name when TABLE_NAME is set and say what
    happened. Never fatal: the name is for people reading `ip`, nra uses the number."""
    if not name:
        return None
    try:
        path = write_table_name(table, name, directory)
    except (TableNameError, OSError) as exc:
        logger.warning("TABLE_NAME: {}; ip shows table {} by number", exc, table)
        return None
    if path is None:
        logger.warning("TABLE_NAME={}: {} does not exist (mount the node's directory there); ip shows "
                       "table {} by number", name, directory, table)
        return None
    logger.info("TABLE_NAME: {} names table {} ({})", name, table, path)
    for entry in conflicts(table, name, directory):
        logger.warning("TABLE_NAME: {} disagrees with {} {}; ip may show either", entry, table, name)
    return path


def unname_table(directory: Path = RT_TABLES_D) -> None:
    """CLEANANDEXIT: remove the name file nra wrote, whatever TABLE_NAME says now."""
    try:
        if remove_table_name(directory):
            logger.info("TABLE_NAME: removed {}", directory / FILE_NAME)
    except OSError as exc:
        logger.warning("TABLE_NAME: cannot remove {}: {}", directory / FILE_NAME, exc.strerror or exc)
