"""The zip check that runs beside a download: it must agree with zipfile's testzip on every
package, good or bad, however the bytes are split into blocks, and say when it cannot tell."""

import hashlib
import io
import random
import zipfile

import pytest

from mirror.store import PackageError, verify_zip
from mirror.streamcheck import StreamCheck, ZipStreamVerifier

MEMBERS = {"mpavbase.vdm": 300_000, "mpasbase.vdm": 120_000, "mpengine.dll": 70_001, "empty.txt": 0}


def make_zip(method=zipfile.ZIP_DEFLATED, members=MEMBERS, seekable=True) -> bytes:
    rng = random.Random(7)
    raw = io.BytesIO()
    # An unseekable output makes zipfile write data descriptors (flag bit 3).
    target = raw if seekable else _Unseekable(raw)
    with zipfile.ZipFile(target, "w", method) as zf:
        for name, size in members.items():
            # Half random, half repetitive: deflate has real work on both kinds.
            data = rng.randbytes(size // 2) + b"signature " * (size // 20)
            zf.writestr(name, data[:size])
    return raw.getvalue()


class _Unseekable(io.RawIOBase):
    def __init__(self, raw):
        self.raw = raw

    def writable(self):
        return True

    def write(self, b):
        return self.raw.write(b)

    def flush(self):
        pass


def stream(data: bytes, block_sizes) -> ZipStreamVerifier:
    verifier = ZipStreamVerifier()
    pos = 0
    sizes = iter(block_sizes)
    while pos < len(data):
        size = next(sizes)
        verifier.feed(data[pos : pos + size])
        pos += size
    return verifier


def infolist(data: bytes):
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return zf.infolist()


def splits(seed):
    rng = random.Random(seed)
    while True:
        yield rng.choice((1, 2, 3, 29, 30, 31, 4096, 65536, 1 << 20))


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
@pytest.mark.parametrize("blocks", ["one", "bytes", "random"])
def test_a_good_zip_is_fully_covered_however_it_is_split(method, blocks):
    data = make_zip(method)
    sizes = {"one": iter([len(data)]), "bytes": iter(lambda: 1, None), "random": splits(1)}[blocks]
    verifier = stream(data, sizes)
    assert verifier.failed is None
    assert verifier.reached_end
    assert verifier.covers(infolist(data))
    assert sorted(name for name, *_ in verifier.members.values()) == sorted(MEMBERS)


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_a_flipped_byte_in_a_member_is_caught_by_name(method):
    data = bytearray(make_zip(method))
    info = next(i for i in infolist(bytes(data)) if i.filename == "mpasbase.vdm")
    data[info.header_offset + 30 + len("mpasbase.vdm") + info.compress_size // 2] ^= 0x55
    verifier = stream(bytes(data), splits(2))
    assert verifier.failed == "mpasbase.vdm"
    assert not verifier.covers(infolist(bytes(data)))


def test_data_descriptors_make_it_give_up_not_guess():
    data = make_zip(seekable=False)
    assert infolist(data)[0].flag_bits & 0x8
    verifier = stream(data, splits(3))
    assert verifier.gave_up and verifier.failed is None
    assert not verifier.covers(infolist(data))


def test_what_is_not_a_zip_is_never_covered():
    verifier = stream(b"<!doctype html><html>error</html>" * 10, splits(4))
    assert verifier.gave_up
    assert not verifier.covers([])


def test_a_truncated_zip_is_not_covered():
    data = make_zip()
    verifier = stream(data[: len(data) // 2], splits(5))
    assert not verifier.reached_end
    assert not verifier.covers(infolist(data))


def test_a_central_directory_that_disagrees_with_the_stream_is_not_covered():
    data = make_zip()
    verifier = stream(data, splits(6))
    infos = infolist(data)
    infos[1].CRC ^= 1
    assert not verifier.covers(infos)


def test_a_deflate_bomb_member_fails_without_inflating_it_all():
    # Declared 1000 bytes, inflates to 50 MB: refused as soon as it passes the declared size.
    data = bytearray(make_zip(members={"bomb.vdm": 50_000_000}))
    info = infolist(bytes(data))[0]
    data[info.header_offset + 22 : info.header_offset + 26] = (1000).to_bytes(4, "little")
    verifier = stream(bytes(data), iter(lambda: 1 << 20, None))
    assert verifier.failed == "bomb.vdm"


def test_stream_check_hashes_and_verifies_what_a_download_wrote(tmp_path):
    data = make_zip()
    path = tmp_path / "pkg.zip"
    with open(path, "wb") as out:
        check = StreamCheck(out.fileno())
        try:
            for pos in range(0, len(data), 4096):
                out.write(data[pos : pos + 4096])
                check.put(data[pos : pos + 4096])
            out.flush()
            sha256 = check.finish()
        finally:
            check.stop()
    assert sha256 == hashlib.sha256(data).hexdigest()
    assert check.zip.covers(infolist(data))
    verify_zip(path, check.zip)  # no error


def test_verify_zip_reads_again_when_the_stream_could_not_vouch(tmp_path):
    """A corrupt member in a zip with data descriptors: the stream gives up, testzip finds it."""
    data = bytearray(make_zip(method=zipfile.ZIP_STORED, seekable=False))
    info = next(i for i in infolist(bytes(data)) if i.filename == "mpengine.dll")
    data[info.header_offset + 30 + len("mpengine.dll") + 10] ^= 0xFF
    path = tmp_path / "pkg.zip"
    path.write_bytes(data)
    verifier = stream(bytes(data), splits(7))
    with pytest.raises(PackageError, match="member mpengine.dll fails its CRC check"):
        verify_zip(path, verifier)


def test_verify_zip_trusts_testzip_over_a_stream_failure(tmp_path):
    """The stream check only ever saves work: a failure it reports is confirmed by a real read."""
    data = make_zip()
    path = tmp_path / "pkg.zip"
    path.write_bytes(data)
    verifier = stream(data, splits(8))
    verifier.failed = "mpavbase.vdm"  # as if the stream check were wrong
    verify_zip(path, verifier)  # testzip says the file is intact: accepted


def test_an_error_in_the_check_thread_surfaces_in_finish_and_never_blocks_the_writer():
    check = StreamCheck()
    check.put("not bytes")  # sha256 refuses str: the thread fails...
    for _ in range(100):  # ...and keeps draining, so a long download can't deadlock on put()
        check.put(b"x" * 1024)
    with pytest.raises(TypeError):
        check.finish()
