"""Upkeep of the data folder: preparing it at start-up and sweeping what crashes leave.

A copy or upload killed mid-write leaves a temp file; a state write killed between writing
and renaming leaves a `*.tmp`. Start-up (main process only: workers start while it may be
copying) and the hourly sweep remove them, so a crash never costs more than its own bytes.
"""

from __future__ import annotations

import os
import stat as statmod

from twisted.logger import Logger

from edge.store.folder.layout import STATE_FOLDERS, FolderLayout, make_folder
from edge.store.folder.meta import MetaRecords

log = Logger()


class FolderUpkeep:
    def __init__(self, layout: FolderLayout, meta: MetaRecords) -> None:
        self.layout = layout
        self.meta = meta

    def prepare(self, sweep: bool = True) -> int:
        """Create the folders and sweep temp files left by an interrupted copy.

        Returns how many stale temp files were removed. Runs before the listener starts, so
        nothing can be writing to `.cosedge/tmp/` yet; worker processes (`sweep=False`)
        start while the main process may be copying, so only the main process sweeps.
        """
        os.makedirs(self.layout.data_dir, exist_ok=True)
        # `.cosedge` and its `tmp` are reached without following links: a state folder
        # that is a link to elsewhere refuses to start (UnsafePath) rather than sweeping it.
        with self.layout.state_folder(create=True) as state_fd:
            st = os.fstat(state_fd)
            self.layout.state_identity = (st.st_dev, st.st_ino)
        # Every state folder is made here, by whoever prepares the data folder (the user
        # twistd drops to): made later, by the still-root assembly, they stayed root's.
        for folder in STATE_FOLDERS:
            with self.layout.state_folder(folder, create=True):
                pass
        for path in self.layout.bucket_dirs.values():
            make_folder(path)
        self.layout.bucket_real = {
            name: os.path.realpath(p) for name, p in self.layout.bucket_dirs.items()
        }
        self.meta.refresh()
        removed = 0
        with self.layout.state_folder("tmp", create=True) as tmp_fd:
            for entry in os.scandir(tmp_fd) if sweep else ():
                try:
                    if entry.is_dir(follow_symlinks=False):
                        continue
                    os.unlink(entry.name, dir_fd=tmp_fd)
                    removed += 1
                except FileNotFoundError:
                    continue
        if removed:
            log.info(
                "Removed {count} stale temporary file(s) from {tmp_dir}",
                count=removed,
                tmp_dir=str(self.layout.tmp_dir),
            )
        return removed

    def sweep_temp_files(self, older_than: float, now: float) -> int:
        """Remove the `*.tmp` files an atomic state write leaves if it dies between
        writing and renaming (rules, buckets, stamps, metadata, uploads' info.json), and
        the temp files of uploads and copies whose process died."""
        candidates = list(self.layout.state_dir.glob(".*.tmp"))
        # Spools and copies write all the time (idle timeouts are seconds): an hour-old
        # part is what a worker killed mid-upload left; only the main process's restart
        # swept those before.
        candidates += self.layout.tmp_dir.glob("*.part")
        for folder in ("origin", "buckets", "meta", "uploads"):
            candidates += (self.layout.state_dir / folder).rglob("*.tmp")
        removed = 0
        for path in candidates:
            try:
                st = path.lstat()
                if statmod.S_ISREG(st.st_mode) and now - st.st_mtime > older_than:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed
