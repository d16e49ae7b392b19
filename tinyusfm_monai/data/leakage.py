"""Find the same picture in two splits.

Public ultrasound sets are assembled from clinical archives, so one frame can appear twice: byte-identical, or
re-exported at another size or compression. An exact hash (of the decoded pixels, so PNG vs JPEG containers do
not hide a copy) catches the first, a 64-bit difference hash the second.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

HASH_SIZE = 8  # 8x8 = 64-bit difference hash
NEAR_DUPLICATE_BITS = 4  # Hamming distance at or below which two images count as near-duplicates
FLAT_STD = 2.0  # grey-level std below which an image is blank: its dHash is noise, so it is not compared


@dataclass(frozen=True)
class Fingerprint:
    exact: str
    dhash: int
    blank: bool


def _gray(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64).mean(axis=2) if image.ndim == 3 else image.astype(np.float64)


def _block_mean(gray: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Area-average downsampling to rows x cols (works for any input size >= 1 pixel)."""
    if gray.shape[0] < rows or gray.shape[1] < cols:  # tiny images: repeat pixels so every cell is non-empty
        gray = np.repeat(np.repeat(gray, rows, axis=0), cols, axis=1)
    h, w = gray.shape
    r_edges = np.linspace(0, h, rows + 1).astype(int)
    c_edges = np.linspace(0, w, cols + 1).astype(int)
    sums = np.add.reduceat(np.add.reduceat(gray, r_edges[:-1], axis=0), c_edges[:-1], axis=1)
    return sums / np.outer(np.diff(r_edges), np.diff(c_edges))


def dhash(image: np.ndarray) -> int:
    """Difference hash: is each of 8x8 cells brighter than its right neighbour (on a 8x9 grid)."""
    small = _block_mean(_gray(image), HASH_SIZE, HASH_SIZE + 1)
    bits = (small[:, 1:] > small[:, :-1]).ravel()
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def fingerprint(image: np.ndarray) -> Fingerprint:
    digest = hashlib.sha256(str(image.shape).encode() + np.ascontiguousarray(image).tobytes()).hexdigest()
    return Fingerprint(exact=digest, dhash=dhash(image), blank=float(_gray(image).std()) < FLAT_STD)


def find_cross_split_duplicates(
    fingerprints: dict[str, Fingerprint], split_of: dict[str, str], max_bits: int = NEAR_DUPLICATE_BITS
) -> list[dict]:
    """Pairs of ids in different splits that are exact or near duplicates, each reported once."""
    ids = sorted(i for i in fingerprints if i in split_of)
    findings: list[dict] = []
    by_exact: dict[str, list[str]] = {}
    for i in ids:
        by_exact.setdefault(fingerprints[i].exact, []).append(i)
    exact_pairs = set()
    for members in by_exact.values():
        for a_pos, a in enumerate(members):
            for b in members[a_pos + 1 :]:
                if split_of[a] != split_of[b]:
                    exact_pairs.add((a, b))
                    findings.append(_finding("exact", a, b, split_of, 0))
    comparable = [i for i in ids if not fingerprints[i].blank]
    if len(comparable) < 2:
        return findings
    hashes = np.array([fingerprints[i].dhash for i in comparable], dtype=np.uint64)
    splits = np.array([split_of[i] for i in comparable])
    chunk = 512
    for start in range(0, len(comparable), chunk):
        block = hashes[start : start + chunk]
        distance = np.bitwise_count(block[:, None] ^ hashes[None, :])
        rows, cols = np.nonzero(distance <= max_bits)
        for r, c in zip(rows.tolist(), cols.tolist()):
            a_pos = start + r
            if c <= a_pos or splits[a_pos] == splits[c]:
                continue
            a, b = comparable[a_pos], comparable[c]
            if (a, b) not in exact_pairs:
                findings.append(_finding("near-duplicate", a, b, split_of, int(distance[r, c])))
    return findings


def _finding(kind: str, a: str, b: str, split_of: dict[str, str], bits: int) -> dict:
    return {"kind": kind, "ids": [a, b], "splits": [split_of[a], split_of[b]], "dhash_distance": bits}
