"""Upload zips and where their files go (app/bundle_zip.py): every hostile member is refused and never
written, limits stop a bomb, the rest of a bundle is still used, and nothing is left outside the session's
temporary folder, which itself goes away."""

from __future__ import annotations

import gc
import io
import json
import os
import stat
import struct
import time
import zipfile
from pathlib import Path

import pytest

from app.bundle_zip import (SESSION_PREFIX, new_session_dir, read_upload, remove_stale_session_dirs, touch,
                            unpack_zip)

PATIENT = json.dumps({"patient_id": "Z1", "age": 60, "sex": "F", "index_time": "2131-05-07 08:00:00"})
VITALS = "time,channel,value\n2131-05-07 09:00:00,Heart Rate,88\n"


def make_zip(members: dict[str, bytes | str], links: dict[str, str] | None = None,
             compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, target)
    return buffer.getvalue()


def all_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink())


@pytest.fixture()
def target(tmp_path: Path) -> Path:
    out = tmp_path / "session" / "upload"
    out.mkdir(parents=True)
    return out


@pytest.mark.parametrize("name", ["../evil.txt", "a/../../evil.txt", "..\\evil.txt", "a\\..\\..\\evil.txt",
                                  "/abs/evil.txt", "\\abs\\evil.txt", "C:/evil.txt", "C:\\evil.txt", "../dir/"])
def test_member_leaving_the_folder_is_refused_and_the_rest_unpacked(name: str, target: Path) -> None:
    out = unpack_zip(make_zip({name: b"x", "P/patient.json": PATIENT}), target)
    assert [(p.field, p.message) for p in out.problems] == [(name, "refused: the path would leave the upload folder")]
    assert not out.fatal
    assert all_files(target) == ["P/patient.json"]
    assert not any(p.name.startswith("evil") or p.name == "dir" for p in target.parent.rglob("*"))


def test_link_members_are_refused_never_written(target: Path) -> None:
    out = unpack_zip(make_zip({"P/patient.json": PATIENT}, links={"P/labs.csv": "/etc/passwd", "P/up": "../.."}), target)
    assert sorted(p.field for p in out.problems) == ["P/labs.csv", "P/up"]
    assert all("links and special files are not allowed" in p.message for p in out.problems)
    assert all_files(target) == ["P/patient.json"] and not out.fatal


def test_special_file_members_are_refused(target: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        fifo = zipfile.ZipInfo("P/fifo")
        fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
        z.writestr(fifo, b"")
        z.writestr("P/patient.json", PATIENT)
    out = unpack_zip(buffer.getvalue(), target)
    assert [p.field for p in out.problems] == ["P/fifo"] and all_files(target) == ["P/patient.json"]


def test_declared_bomb_is_refused_before_writing(target: Path) -> None:
    bomb = make_zip({"big.bin": b"\0" * (3 * 1024**2)})
    out = unpack_zip(bomb, target, max_total=1024**2)
    assert out.fatal and "expected at most 1 MB unpacked; the zip declares 3 MB" in out.problems[0].message
    assert all_files(target) == []


def test_member_over_the_per_file_cap_stops_unpacking(target: Path) -> None:
    """Sizes are counted while writing: the member stops at the cap, its partial file is removed and
    nothing more is unpacked."""
    out = unpack_zip(make_zip({"one.bin": b"\0" * (3 * 1024**2), "two.txt": b"x"}), target, max_member=1024**2)
    assert out.fatal and [p.field for p in out.problems] == ["one.bin"]
    assert "refused: more than 1 MB per file unpacked" in out.problems[0].message
    assert all_files(target) == []


def _lie_about_size(data: bytes, size: int) -> bytes:
    """The zip with its only member's uncompressed size rewritten (local header and central directory)."""
    data = bytearray(data)
    local = data.index(b"PK\x03\x04")
    struct.pack_into("<I", data, local + 22, size)
    central = data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, size)
    return bytes(data)


def test_member_that_lies_about_its_size_is_left_out_whole(target: Path) -> None:
    lying = _lie_about_size(make_zip({"P/labs.csv": b"a" * 100_000}), 1000)
    out = unpack_zip(lying, target)
    assert [p.field for p in out.problems] == ["P/labs.csv"]
    assert "could not be unpacked" in out.problems[0].message and "left out" in out.problems[0].message
    assert not (target / "P" / "labs.csv").exists()  # no half-written file is read later


def test_too_many_members_is_refused(target: Path) -> None:
    out = unpack_zip(make_zip({f"f{i}.txt": b"" for i in range(12)}), target, max_members=10)
    assert out.fatal and "expected at most 10 files; the zip has 12" in out.problems[0].message


def test_not_a_zip_and_empty_zip(target: Path) -> None:
    assert unpack_zip(b"PK\x03\x04 broken", target).fatal
    out = unpack_zip(make_zip({}), target)
    assert out.fatal and "the zip is empty" in out.problems[0].message


# ------------------------------------------------------------------------------ read_upload


def test_read_upload_uses_the_rest_of_a_bundle_with_a_refused_member(tmp_path: Path) -> None:
    data = make_zip({"P/patient.json": PATIENT, "P/vitals.csv": VITALS, "../escape.txt": "x"},
                    links={"P/labs.csv": "/etc/passwd"})
    result = read_upload(data, "p.zip", None, "validation only", workdir=tmp_path)
    assert not result.fatal and [r.patient_id for r in result.records] == ["Z1"]
    assert len(result.records[0].vitals.table) == 1 and result.records[0].labs.table.empty
    assert set(result.problems["field"]) >= {"../escape.txt", "P/labs.csv"}
    assert (result.problems["severity"] == "error").sum() == 2
    assert result.score_error == "validation only"
    assert all_files(tmp_path) == [] and list(tmp_path.iterdir()) == []  # unpacked, read, deleted
    assert not (tmp_path.parent / "escape.txt").exists()


def test_read_upload_refuses_a_zip_over_a_limit_whole(tmp_path: Path) -> None:
    members = {"P/patient.json": PATIENT} | {f"P/junk/{i}.txt": b"" for i in range(5000)}
    result = read_upload(make_zip(members, compression=zipfile.ZIP_STORED), "many.zip", None, workdir=tmp_path)
    assert result.fatal == "The zip was refused; nothing from it was used." and not result.records
    assert "expected at most 5000 files; the zip has 5001" in result.problems.iloc[0]["message"]
    assert list(tmp_path.iterdir()) == []


def test_read_upload_names_a_bundle_without_patient_json(tmp_path: Path) -> None:
    result = read_upload(make_zip({"P/vitals.csv": VITALS}), "p.zip", None, workdir=tmp_path)
    assert not result.records and "could be read" in result.fatal
    row = result.problems.iloc[0]
    assert (row["file"], row["message"]) == ("P/patient.json", "expected a patient.json file in every bundle folder")


# ------------------------------------------------------------------------------ session folders


def test_session_dir_is_removed_on_cleanup_and_when_dropped(tmp_path: Path) -> None:
    first = new_session_dir(tmp_path)
    path = Path(first.name)
    assert path.parent == tmp_path and path.name.startswith(SESSION_PREFIX) and path.is_dir()
    (path / "checkpoint-x").mkdir()
    first.cleanup()
    assert not path.exists()

    second = new_session_dir(tmp_path)
    path = Path(second.name)
    (path / "file").write_text("x")
    del second  # the session's state is dropped: the folder goes with it
    gc.collect()
    assert not path.exists()


def test_stale_session_dirs_are_swept_and_fresh_ones_kept(tmp_path: Path) -> None:
    old = tmp_path / f"{SESSION_PREFIX}old"
    fresh = tmp_path / f"{SESSION_PREFIX}fresh"
    other = tmp_path / "someone-elses"
    for folder in (old, fresh, other):
        folder.mkdir()
        (folder / "f").write_text("x")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "f").write_text("x")
    link = tmp_path / f"{SESSION_PREFIX}link"
    link.symlink_to(victim)
    day_ago = time.time() - 24 * 3600
    for path in (old, other, victim):
        os.utime(path, (day_ago, day_ago))
    os.utime(link, (day_ago, day_ago), follow_symlinks=False)
    removed = remove_stale_session_dirs(tmp_path, max_age_hours=12)
    assert removed == [old]
    assert fresh.is_dir() and other.is_dir() and (victim / "f").exists()

    os.utime(fresh, (day_ago, day_ago))
    touch(fresh)  # a page run marks its session's folder as in use
    assert remove_stale_session_dirs(tmp_path, max_age_hours=12) == [] and fresh.is_dir()


def test_new_session_dir_sweeps_first(tmp_path: Path) -> None:
    old = tmp_path / f"{SESSION_PREFIX}crashed"
    old.mkdir()
    os.utime(old, (0, 0))
    session = new_session_dir(tmp_path)
    assert not old.exists() and Path(session.name).is_dir()
    session.cleanup()


# ------------------------------------------------------------------------------ hostile layouts (issue 19)


def zip_of(members: list[tuple[str, bytes | str]]) -> bytes:
    """A zip with members in this order; names may repeat (zipfile warns, a hostile tool does not)."""
    import warnings

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with zipfile.ZipFile(buffer, "w") as z:
            for name, data in members:
                z.writestr(name, data)
    return buffer.getvalue()


GOOD = [("P00001/patient.json", PATIENT), ("P00001/vitals.csv", VITALS)]


def test_file_written_after_the_folder_of_the_same_name_is_refused(target: Path) -> None:
    out = unpack_zip(zip_of(GOOD + [("P00002/patient.json", PATIENT.replace("Z1", "Z2")),
                                    ("P00002/images/index.csv", "file,time,view\n"), ("P00002/images", b"x")]), target)
    assert [(p.field, p.message) for p in out.problems] == [
        ("P00002/images", "refused: a file with the same path as a folder in the zip (a file and a folder cannot "
                          "share a name)")]
    assert not out.fatal and "P00002/images/index.csv" in all_files(target)


def test_file_followed_by_a_folder_under_it_is_refused(target: Path) -> None:
    out = unpack_zip(zip_of([("P1", b"a file"), ("P1/patient.json", PATIENT)] + GOOD), target)
    assert [(p.field, p.message) for p in out.problems] == [
        ("P1", "refused: a file with the same path as a folder in the zip (a file and a folder cannot share a name)")]
    assert all_files(target) == ["P00001/patient.json", "P00001/vitals.csv", "P1/patient.json"]


def test_overlong_name_is_refused_not_a_traceback(target: Path) -> None:
    long = "A" * 300
    out = unpack_zip(zip_of(GOOD + [(f"P00001/notes/{long}.txt", "x")]), target)
    assert len(out.problems) == 1 and out.problems[0].message == (
        "refused: a file or folder name is 304 bytes long; expected at most 255")
    assert all_files(target) == ["P00001/patient.json", "P00001/vitals.csv"]


def test_two_members_with_one_path_refuse_the_zip(target: Path) -> None:
    out = unpack_zip(zip_of(GOOD + [("P00001/vitals.csv", "time,channel,value\n")]), target)
    assert out.fatal and [p.message for p in out.problems] == [
        "refused: 1 path(s) appear more than once in the zip ('P00001/vitals.csv'); which copy is meant cannot be told"]
    assert all_files(target) == []


def test_duplicate_patient_ids_in_a_zip_are_listed_and_not_offered(tmp_path: Path) -> None:
    members = GOOD + [(f"B{i}/patient.json", PATIENT.replace('"Z1"', '" DUPLICATE "' if i == 2 else '"DUPLICATE"'))
                      for i in range(3)]
    result = read_upload(zip_of(members), "dups.zip", None, workdir=tmp_path)
    assert [r.patient_id for r in result.records] == ["Z1"] and result.duplicates == 3
    rows = result.problems[result.problems["field"] == "patient_id"]
    assert list(rows["bundle"]) == ["B0", "B1", "B2"]
    assert rows.iloc[0]["message"] == "expected unique patient ids; 'DUPLICATE' occurs 3 times (also in B1, B2)"
