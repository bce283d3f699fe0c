"""Checking a package while it downloads: sha256, zip member CRCs, and early writeback.

The download loop only receives and writes; a ``StreamCheck`` thread hashes each block,
follows the zip structure and CRC-32 of every member as the bytes go by, and fdatasyncs the
file every few MiB. hashlib and zlib release the GIL on large buffers, so the two threads
really overlap: the sync runs at the speed of the network instead of network + sha256 +
a second read of the whole file for the CRC test + one big fsync (bench/sync.py).
"""

import hashlib
import os
import queue
import struct
import threading
import zlib

LOCAL_HEADER = b"PK\x03\x04"
# What may follow the last member: central directory, zip64 end records, end of central directory.
TRAILERS = (b"PK\x01\x02", b"PK\x06\x06", b"PK\x06\x07", b"PK\x05\x06")
STORED, DEFLATED = 0, 8
FLAG_ENCRYPTED, FLAG_DESCRIPTOR, FLAG_UTF8 = 0x1, 0x8, 0x800
INFLATE_PIECE = 1024 * 1024  # bound on what one decompress call may produce: no zip bomb in memory
RATIO_FLOOR = 1024 * 1024  # as store.ZIP_RATIO_FLOOR: small members inflate as they like
QUEUE_BLOCKS = 16  # blocks in flight between the download and the check
SYNC_EVERY = 32 * 1024 * 1024


class ZipStreamVerifier:
    """Follows a zip file front to back and checks each member's size and CRC-32 as it passes.

    After the whole stream: ``failed`` names the first member whose content is wrong;
    ``covers(infolist)`` says whether every member of the central directory was checked here,
    so that ``verify_zip`` needs no second read. On what a stream cannot follow (data
    descriptors, zip64 sizes, encryption, other compression methods, anything unexpected)
    it gives up quietly, and ``verify_zip`` falls back to reading the file again.
    """

    def __init__(self, max_ratio: int | None = None):
        from django.conf import settings

        self.max_ratio = max_ratio or settings.MIRROR_ZIP_MAX_RATIO
        self.members: dict[int, tuple] = {}  # local header offset -> (name, crc, compressed, size)
        self.failed: str | None = None
        self.gave_up = False
        self.reached_end = False
        self._offset = 0  # absolute offset of self._pending[0]
        self._pending = bytearray()  # header bytes not yet complete
        self._member = None

    def feed(self, data) -> None:
        data = memoryview(data)
        while data and not (self.gave_up or self.reached_end or self.failed):
            data = self._header(data) if self._member is None else self._content(data)

    def _fill(self, data: memoryview, taken: int, need: int) -> int:
        more = max(0, min(need - len(self._pending), len(data) - taken))
        self._pending += data[taken : taken + more]
        return taken + more

    def _header(self, data: memoryview) -> memoryview:
        """Collect one local file header (it may arrive split across blocks) and start its member."""
        taken = self._fill(data, 0, 4)
        if len(self._pending) < 4:
            return data[taken:]
        signature = bytes(self._pending[:4])
        if signature != LOCAL_HEADER:
            if signature in TRAILERS:
                self.reached_end = True
            else:
                self.gave_up = True
            return data[taken:]
        taken = self._fill(data, taken, 30)
        if len(self._pending) < 30:
            return data[taken:]
        name_len, extra_len = struct.unpack_from("<HH", self._pending, 26)
        taken = self._fill(data, taken, 30 + name_len + extra_len)
        if len(self._pending) < 30 + name_len + extra_len:
            return data[taken:]
        (_, _, flags, method, _, _, crc, compressed, size, name_len, _) = struct.unpack_from(
            "<4sHHHHHIIIHH", self._pending
        )
        raw_name = bytes(self._pending[30 : 30 + name_len])
        name = raw_name.decode("utf-8" if flags & FLAG_UTF8 else "cp437", errors="replace")
        if (
            flags & (FLAG_ENCRYPTED | FLAG_DESCRIPTOR)
            or method not in (STORED, DEFLATED)
            or 0xFFFFFFFF in (compressed, size)
            # A member that would inflate past the bound is not inflated here: verify_zip refuses it (store.py).
            or (size > RATIO_FLOOR and size > compressed * self.max_ratio)
        ):
            self.gave_up = True
            return data[taken:]
        self._member = _Member(self._offset, name, method, crc, compressed, size)
        self._offset += len(self._pending)
        self._pending = bytearray()
        if compressed == 0:
            self._finish_member()
        return data[taken:]

    def _content(self, data: memoryview) -> memoryview:
        member = self._member
        take = min(member.remaining, len(data))
        try:
            member.feed(data[:take])
        except (zlib.error, _TooLong):
            self.failed = member.name
            return data[take:]
        self._offset += take
        if member.remaining == 0:
            self._finish_member()
        return data[take:]

    def _finish_member(self) -> None:
        member, self._member = self._member, None
        try:
            ok = member.finish()
        except (zlib.error, _TooLong):
            ok = False
        if not ok:
            self.failed = member.name
            return
        self.members[member.offset] = (member.name, member.crc, member.compressed, member.size)

    def covers(self, infolist) -> bool:
        """True when every member listed in the central directory was checked in the stream."""
        if self.gave_up or self.failed or not self.reached_end or len(infolist) != len(self.members):
            return False
        return all(
            self.members.get(i.header_offset) == (i.filename, i.CRC, i.compress_size, i.file_size) for i in infolist
        )


class _TooLong(Exception):
    pass


class _Member:
    def __init__(self, offset, name, method, crc, compressed, size):
        self.offset, self.name, self.method = offset, name, method
        self.crc, self.compressed, self.size = crc, compressed, size
        self.remaining = compressed
        self.actual_crc = 0
        self.actual_size = 0
        self._inflate = zlib.decompressobj(-15) if method == DEFLATED else None

    def _add(self, out) -> None:
        self.actual_size += len(out)
        if self.actual_size > self.size:
            raise _TooLong
        self.actual_crc = zlib.crc32(out, self.actual_crc)

    def feed(self, data: memoryview) -> None:
        self.remaining -= len(data)
        if self._inflate is None:
            self._add(data)
            return
        self._add(self._inflate.decompress(data, INFLATE_PIECE))
        while self._inflate.unconsumed_tail:
            self._add(self._inflate.decompress(self._inflate.unconsumed_tail, INFLATE_PIECE))

    def finish(self) -> bool:
        if self._inflate is not None:
            self._add(self._inflate.flush())
            if not self._inflate.eof:
                return False
        return self.actual_size == self.size and self.actual_crc == self.crc


class StreamCheck:
    """Threads that hash, zip-check and sync what the download loop has written.

    ``put(block)`` after each write (the block must already be in the file); ``finish()``
    waits for the threads and returns the sha256; ``stop()`` (always, e.g. in a finally)
    ends them without a result. Must end before the file descriptor is closed.

    sha256, the zip check and fdatasync each have a thread: none waits for another, and the
    download loop only waits when one of them is QUEUE_BLOCKS behind.
    """

    def __init__(self, fileno: int | None = None):
        self.digest = hashlib.sha256()
        self.zip = ZipStreamVerifier()
        self._fileno = fileno
        self._error: BaseException | None = None
        self._sync_wanted = threading.Event()
        self._closing = False
        self._unsynced = 0
        self._queues = [queue.Queue(maxsize=QUEUE_BLOCKS), queue.Queue(maxsize=QUEUE_BLOCKS)]
        self._threads = [
            threading.Thread(
                target=self._drain, args=(self._queues[0], self.digest.update), name="stream-sha256", daemon=True
            ),
            threading.Thread(target=self._drain, args=(self._queues[1], self.zip.feed), name="stream-zip", daemon=True),
        ]
        if fileno is not None:
            self._threads.append(threading.Thread(target=self._sync, name="stream-sync", daemon=True))
        for thread in self._threads:
            thread.start()

    def put(self, block) -> None:
        for q in self._queues:
            q.put(block)
        if self._fileno is not None:
            self._unsynced += len(block)
            if self._unsynced >= SYNC_EVERY:
                self._sync_wanted.set()  # writeback while the download goes on
                self._unsynced = 0

    def _drain(self, blocks: queue.Queue, consume) -> None:
        while (block := blocks.get()) is not None:
            if self._error is not None:
                continue  # keep draining so put() never blocks
            try:
                consume(block)
            except BaseException as exc:  # noqa: BLE001 - re-raised in finish()
                self._error = exc

    def _sync(self) -> None:
        while True:
            self._sync_wanted.wait()
            self._sync_wanted.clear()
            if self._closing:
                return
            try:
                os.fdatasync(self._fileno)
            except OSError as exc:
                self._error = self._error or exc

    def stop(self) -> None:
        if self._closing:
            return
        for q in self._queues:
            q.put(None)
        for thread in self._threads[:2]:
            thread.join()
        self._closing = True
        self._sync_wanted.set()
        for thread in self._threads[2:]:
            thread.join()

    def finish(self) -> str:
        self.stop()
        if self._error is not None:
            raise self._error
        return self.digest.hexdigest()
