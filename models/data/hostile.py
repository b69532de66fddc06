"""Hostile and malformed ISMRMRD inputs, made from a good file: what a security tester (or a broken scanner
export) sends. The test suite and ``bench/memory_service.py`` feed them to every entry point; a deployment can
use them to check its own limits (``hostile_files`` and ``mutated_file``).

Each case is named after what is wrong; none of them may ever cause a 500, a crash or lasting memory growth.
"""

from __future__ import annotations

import random
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import h5py
import numpy as np
from ismrmrd.hdf5 import acquisition_dtype

PATIENT_NAME = "Hostile^Jane"  # planted in headers: it must never appear in a log line


def _xml(path: Path) -> str:
    with h5py.File(path, "r") as f:
        value = f["dataset/xml"][0]
    return value.decode() if isinstance(value, bytes) else value


def _replace_xml(path: Path, text: str) -> None:
    with h5py.File(path, "a") as f:
        del f["dataset/xml"]
        xml = f["dataset"].create_dataset("xml", shape=(1,), dtype=h5py.special_dtype(vlen=bytes))
        xml[0] = text.encode()


def _with_patient(text: str) -> str:
    """The header with ``PATIENT_NAME`` as its patient name (the first element of subjectInformation)."""
    name = f"<patientName>{PATIENT_NAME}</patientName>"
    if "<subjectInformation>" in text:
        return text.replace("<subjectInformation>", "<subjectInformation>" + name, 1)
    info = f"<subjectInformation>{name}</subjectInformation>"
    return text.replace("<measurementInformation>", info + "<measurementInformation>", 1)


def _regex_xml(pattern: str, replacement: str, plant_patient: bool = False) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        text = _with_patient(_xml(path)) if plant_patient else _xml(path)
        changed, count = re.subn(pattern, replacement, text, count=1)
        if count != 1:
            raise ValueError(f"the good file's header has nothing matching {pattern!r}")
        _replace_xml(path, changed)
    return edit


def _matrix(x: int, y: int) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        text = _xml(path)
        start = text.index("<encodedSpace>")
        end = text.index("</encodedSpace>")
        block = text[start:end]
        size = block[block.index("<matrixSize>"):block.index("</matrixSize>")]
        new = f"<matrixSize><x>{x}</x><y>{y}</y><z>1</z>"
        _replace_xml(path, text[:start] + block.replace(size, new) + text[end:])
    return edit


def _replaced(name: str, make: Callable[[h5py.Group], None]) -> Callable[[Path], None]:
    """An edit that deletes the ISMRMRD group's ``name`` dataset and lets ``make`` write another one."""
    def edit(path: Path) -> None:
        with h5py.File(path, "a") as f:
            del f["dataset"][name]
            make(f["dataset"])
    return edit


def _declared_records(count: int) -> Callable[[h5py.Group], None]:
    """A ``data`` dataset of ``count`` records that costs nothing on disk (never written, read as fill value)."""
    def make(group: h5py.Group) -> None:
        group.create_dataset("data", shape=(count,), dtype=acquisition_dtype, chunks=(4096,), compression="gzip")
    return make


def _patch_records(change: Callable[[np.ndarray], None]) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        with h5py.File(path, "a") as f:
            records = f["dataset/data"][:]
            change(records)
            f["dataset/data"][...] = records
    return edit


def _last_head(field: str, value: int) -> Callable[[np.ndarray], None]:
    def change(records: np.ndarray) -> None:
        heads = records["head"].copy()
        target = heads
        *parents, name = field.split(".")
        for parent in parents:
            target = target[parent]
        target[name][-1] = value
        records["head"] = heads
    return change


def _nan_line(records: np.ndarray) -> None:
    line = records[-2]["data"].copy()
    line[:] = np.nan
    records[-2]["data"] = line


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _not_hdf5(path: Path) -> None:
    path.write_bytes(b"this is not an HDF5 file\n" * 100)


def _huge_header(path: Path) -> None:
    text = _xml(path)
    _replace_xml(path, text.replace("</ismrmrdHeader>", "<!--" + "x" * (40 * 1024**2) + "--></ismrmrdHeader>"))


BILLION_LAUGHS = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;'
                  '&lol;&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;'
                  '&lol2;&lol2;">]><ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">&lol3;</ismrmrdHeader>')

HOSTILE_EDITS: dict[str, Callable[[Path], None]] = {
    "not_hdf5": _not_hdf5,
    "truncated": _truncate,
    "xml_integer": _replaced("xml", lambda g: g.create_dataset("xml", data=np.arange(3))),
    "xml_zero_length": _replaced("xml", lambda g: g.create_dataset("xml", shape=(0,),
                                                                   dtype=h5py.special_dtype(vlen=bytes))),
    "xml_empty_string": _replaced("xml", lambda g: g.create_dataset("xml", data=[b""],
                                                                    dtype=h5py.special_dtype(vlen=bytes))),
    "xml_not_ismrmrd": lambda p: _replace_xml(p, "<html><body>hello</body></html>"),
    "xml_billion_laughs": lambda p: _replace_xml(p, BILLION_LAUGHS),
    "xml_40mb": _huge_header,
    "header_value_of_wrong_type": _regex_xml(r"<receiverChannels>\d+</receiverChannels>",
                                             f"<receiverChannels>{PATIENT_NAME}</receiverChannels>", True),
    "matrix_100000x100000": _matrix(100000, 100000),
    "matrix_256x100000": _matrix(256, 100000),
    "matrix_zero": _matrix(0, 64),
    "slices_65535": _regex_xml(r"(<slice>\s*<minimum>0</minimum>\s*<maximum>)\d+(</maximum>)", r"\g<1>65534\2"),
    "data_not_acquisitions": _replaced("data", lambda g: g.create_dataset("data", data=np.zeros((10, 10)))),
    "data_20m_records": _replaced("data", _declared_records(20_000_000)),
    "data_1m_empty_records": _replaced("data", _declared_records(1_000_000)),
    "channels_beyond_data": _patch_records(_last_head("active_channels", 64)),
    "samples_beyond_data": _patch_records(_last_head("number_of_samples", 60000)),
    "line_outside_matrix": _patch_records(_last_head("idx.kspace_encode_step_1", 60000)),
    "slice_index_huge": _patch_records(_last_head("idx.slice", 60000)),
    "nan_kspace": _patch_records(_nan_line),
}


def hostile_files(good: Path, directory: Path) -> Iterator[tuple[str, Path]]:
    """Every hostile variant of ``good`` as ``(name, path)``, written into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, edit in HOSTILE_EDITS.items():
        path = directory / f"{name}.h5"
        shutil.copy(good, path)
        edit(path)
        yield name, path


HOSTILE_VALUES = ("0", "-1", "65536", "2147483648", "18446744073709551616", "1e309", "nan", "-inf", "", "1.5",
                  PATIENT_NAME, "9" * 400, "<", "&amp;")
_TEXT_NODE = re.compile(r">([^<>]*)<")


def mutated_xml(text: str, rng: random.Random) -> str:
    """``text`` with one element's text (a number, a name, a size) replaced by a hostile value."""
    nodes = [m for m in _TEXT_NODE.finditer(text) if m.group(1).strip()]
    if not nodes:
        return text
    node = rng.choice(nodes)
    return text[:node.start(1)] + rng.choice(HOSTILE_VALUES) + text[node.end(1):]


def _head_fields(dtype: np.dtype, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    fields: list[tuple[str, ...]] = []
    for name in dtype.names or ():
        sub = dtype[name]
        fields += _head_fields(sub, (*prefix, name)) if sub.names else [(*prefix, name)]
    return fields


def mutate_head(head: np.ndarray, rng: random.Random) -> None:
    """Set one field of an acquisition header record (structured numpy, in place) to an extreme value."""
    path = rng.choice(_head_fields(head.dtype))
    target = head
    for name in path[:-1]:
        target = target[name]
    field = target[path[-1]]
    kind = np.asarray(field).dtype
    if kind.kind in "iu":
        info = np.iinfo(kind)
        value: object = rng.choice([0, 1, info.max, info.min, rng.randint(int(info.min), int(info.max))])
    else:
        value = rng.choice([0.0, -1.0, 1e30, float("nan"), float("inf")])
    if np.ndim(field):
        index = rng.randrange(np.size(field))
        array = np.array(field)
        array.flat[index] = value
        target[path[-1]] = array
    else:
        target[path[-1]] = value


def mutated_file(good: Path, path: Path, seed: int) -> Path:
    """A copy of ``good`` at ``path`` with one seeded mutation: bytes, a header value or an acquisition field."""
    rng = random.Random(seed)
    kind = rng.random()
    if kind < 0.4:
        path.write_bytes(mutated_bytes(good.read_bytes(), seed))
        return path
    shutil.copy(good, path)
    if kind < 0.7:
        _replace_xml(path, mutated_xml(_xml(path), rng))
        return path
    with h5py.File(path, "a") as f:
        records = f["dataset/data"]
        index = rng.randrange(records.shape[0])
        record = records[index]
        head = record["head"].copy()
        mutate_head(head, rng)
        record["head"] = head
        records[index] = record
    return path


def mutated_bytes(good: bytes, seed: int, max_flips: int = 8) -> bytes:
    """``good`` with a few random bytes overwritten, a span duplicated or a tail cut (seeded)."""
    rng = random.Random(seed)
    data = bytearray(good)
    kind = rng.random()
    if kind < 0.7:
        for _ in range(rng.randint(1, max_flips)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind < 0.85:
        start = rng.randrange(len(data))
        data[start:start] = data[start:start + rng.randint(1, 4096)]
    else:
        del data[rng.randrange(1, len(data)):]
    return bytes(data)
