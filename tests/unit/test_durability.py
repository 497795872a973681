from __future__ import annotations

import ctypes
import errno

import pytest

from pgops import durability


def test_syncfs_flushes_a_real_file_system(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    durability.syncfs(tmp_path)  # Linux has syncfs: returns without error


def test_a_failed_syncfs_raises_instead_of_falling_back_to_a_silent_sync(monkeypatch, tmp_path):
    synced = []

    def failing_syncfs(fd: int) -> int:
        ctypes.set_errno(errno.EIO)  # what syncfs returns after a failed writeback
        return -1

    monkeypatch.setattr(durability, "_libc_function", lambda name: failing_syncfs if name == "syncfs" else None)
    monkeypatch.setattr(durability.os, "sync", lambda: synced.append(True))
    with pytest.raises(OSError, match="syncfs of the file system holding .* failed") as info:
        durability.syncfs(tmp_path)
    assert info.value.errno == errno.EIO
    assert not synced


def test_without_syncfs_it_falls_back_to_sync(monkeypatch, tmp_path):
    synced = []
    monkeypatch.setattr(durability, "_libc_function", lambda name: None)
    monkeypatch.setattr(durability.os, "sync", lambda: synced.append(True))
    durability.syncfs(tmp_path)
    assert synced == [True]


def test_the_writeback_starter_is_looked_up_once_and_starts_writeback(tmp_path):
    start = durability.writeback_starter()
    assert start is durability.writeback_starter()
    with open(tmp_path / "f", "wb") as out:
        out.write(b"x" * 65536)
        out.flush()
        assert start(out.fileno(), 0, 65536) == 0
