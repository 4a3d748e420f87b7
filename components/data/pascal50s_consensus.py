"""Pascal-50S human judgements of caption pairs (Vedantam et al. 2015, CIDEr, §4).

4,000 pairs of candidate captions for the 1,000 PASCAL images of Pascal-50S,
each judged 48 times by people shown a reference sentence A and asked which of
two candidates, B or C, is more like it. As distributed with the CIDEr paper's
data, the folder ``pyCIDErConsensus/`` holds two MATLAB v5 files, read with
``scipy.io.loadmat`` (unsqueezed, as public readers do):

``pair_pascal.mat``
    * ``new_input``: a 1xP struct array (P = 4,000), one entry per pair, with
      exactly three fields of char, in this order: the image file
      (``2008_000032.jpg``), candidate sentence A, candidate sentence B.
      Public readers: ``vid, a, b = [x[0] for x in mat["new_input"][0][i]]``.
    * ``category``: 1xP numbers, the pair's kind: 1 = HC (two human captions
      of the image), 2 = HI (a human caption of the image against one of
      another image), 3 = HM (human against machine), 4 = MM (two machine
      captions).
    * ``new_data`` (optional here): Px2 numbers, the sources of the two
      candidates (1-5 a captioning system, 6 a human caption of the image,
      7 of another image). When present, ``category`` is checked against it
      with the public readers' sanity rule: HC when the codes sum to 12, HI
      when they sum to 13, HM when one is below 6, MM when both are.

``consensus_pascal.mat``
    * ``triplets``: a 1x(P*K) struct array, K consecutive entries per pair in
      pair order (K = 48 in the released file), each with exactly four fields:
      A the reference sentence, B and C the pair's two candidates (in either
      order; compared after ``strip()``), D the person's choice (1: B is more
      like A; any other number, -1 in the file: C). A, B and C are 1x1 cells
      of char (public readers: ``a, b, c, d = [x[0][0] for x in triplets[j]]``
      then ``a[0]``); a bare char field is read too.

K is a property of the file: the number of triplets divided by the number of
pairs (48 in the release; a smaller K for tests). Every pair has K votes, and
its references are the K sentences A of its triplets, stripped, in file order.

Bad input is a :class:`DatasetFormatError` naming the file and the variable or
field (``triplets(97).B``, 1-based as in MATLAB): a missing file or variable,
a struct with the wrong number of fields, text that is not text, a count that
does not match (``category`` not one per pair, ``triplets`` not K per pair), a
category outside 1..4 or against ``new_data``, a triplet whose candidates are
not its pair's two sentences.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from components.data.schema import DatasetFormatError

PAIR_FILE = "pair_pascal.mat"
CONSENSUS_FILE = "consensus_pascal.mat"
CATEGORIES = {1: "HC", 2: "HI", 3: "HM", 4: "MM"}
"""``category`` code -> the pair kind's name."""
RELEASED_JUDGEMENTS_PER_PAIR = 48


@dataclasses.dataclass(frozen=True)
class JudgedPair:
    """One candidate pair of Pascal-50S with its people's votes.

    Attributes:
        image: The image file, e.g. ``2008_000032.jpg``.
        category: ``HC``, ``HI``, ``HM`` or ``MM``.
        a: Candidate A, as in ``new_input`` (raw text).
        b: Candidate B.
        references: The sentences A of the pair's triplets, stripped, in file order.
        votes_a: Triplets whose person chose candidate A.
        votes_b: Triplets whose person chose candidate B (``votes_a + votes_b`` = K).
    """

    image: str
    category: str
    a: str
    b: str
    references: tuple[str, ...]
    votes_a: int
    votes_b: int

    @property
    def human_choice(self) -> int:
        """The majority of the votes: 1 (A), -1 (B) or 0 (a tie)."""
        return int(np.sign(self.votes_a - self.votes_b))


@dataclasses.dataclass(frozen=True)
class Consensus:
    """The pairs of one ``pyCIDErConsensus`` folder, in file order."""

    pairs: tuple[JudgedPair, ...]
    judgements_per_pair: int  # K


def consensus_files(folder: str | Path) -> dict[str, Path]:
    """The two files of a ``pyCIDErConsensus`` folder, by file name (existing or not)."""
    return {name: Path(folder) / name for name in (PAIR_FILE, CONSENSUS_FILE)}


def read_consensus(folder: str | Path) -> Consensus:
    """Read ``pair_pascal.mat`` and ``consensus_pascal.mat`` of ``folder``.

    Args:
        folder: The ``pyCIDErConsensus`` folder.

    Returns:
        The pairs with their categories, references and vote counts.

    Raises:
        DatasetFormatError: A file is missing or unreadable, or a variable or
            field is missing or inconsistent; the message names the file and field.
    """
    files = consensus_files(folder)
    pair_path, consensus_path = files[PAIR_FILE], files[CONSENSUS_FILE]
    pair_mat, consensus_mat = _load(pair_path), _load(consensus_path)

    inputs = _records(pair_mat, "new_input", pair_path, fields=3)
    n = len(inputs)
    if n == 0:
        raise DatasetFormatError(f"{pair_path}: variable 'new_input' has no pairs")
    pairs_text = []
    for i, record in enumerate(inputs, start=1):
        image, a, b = (_nonempty_text(record[f], f"new_input({i}).{name}", pair_path)
                       for f, name in zip(range(3), ("image", "A", "B")))
        pairs_text.append((image, a, b))
    categories = _categories(pair_mat, n, pair_path)

    triplets = _records(consensus_mat, "triplets", consensus_path, fields=4)
    if len(triplets) % n or not triplets.size:
        raise DatasetFormatError(
            f"{consensus_path}: variable 'triplets' has {len(triplets)} entries, not the same number for "
            f"each of the {n} pairs of {pair_path} 'new_input' (the released file has "
            f"{RELEASED_JUDGEMENTS_PER_PAIR} per pair)")
    k = len(triplets) // n
    pairs = []
    for i, ((image, a, b), category) in enumerate(zip(pairs_text, categories)):
        references, votes = [], [0, 0]  # votes for A, for B
        for j in range(i * k, (i + 1) * k):
            ref, first, second, choice = _triplet(triplets[j], j + 1, consensus_path)
            if (first, second) == (a.strip(), b.strip()):
                order = (0, 1)
            elif (first, second) == (b.strip(), a.strip()):
                order = (1, 0)
            else:
                raise DatasetFormatError(
                    f"{consensus_path}: triplets({j + 1}).B/C ({first!r}, {second!r}) are not the sentences "
                    f"of pair {i + 1} in {pair_path} new_input({i + 1}) ({a.strip()!r}, {b.strip()!r}); "
                    f"with {k} triplets per pair, triplets {i * k + 1}..{(i + 1) * k} belong to it")
            votes[order[0] if choice == 1 else order[1]] += 1
            references.append(ref)
        pairs.append(JudgedPair(image=image, category=CATEGORIES[category], a=a, b=b,
                                references=tuple(references), votes_a=votes[0], votes_b=votes[1]))
    return Consensus(pairs=tuple(pairs), judgements_per_pair=k)


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DatasetFormatError(f"{path}: no such file (the pyCIDErConsensus folder holds {PAIR_FILE} "
                                 f"and {CONSENSUS_FILE})")
    try:
        return scipy.io.loadmat(path, squeeze_me=False, struct_as_record=True)
    except NotImplementedError as e:  # scipy's answer to v7.3 (HDF5) files
        raise DatasetFormatError(f"{path}: MATLAB v7.3 (HDF5) files are not supported; re-save it with "
                                 f"save(..., '-v7') ({e})") from e
    except Exception as e:  # scipy raises ValueError, MatReadError, TypeError...
        raise DatasetFormatError(f"{path}: not a readable MATLAB .mat file ({e})") from e


def _variable(mat: dict[str, Any], name: str, path: Path) -> np.ndarray:
    if name not in mat:
        found = ", ".join(k for k in mat if not k.startswith("__")) or "none"
        raise DatasetFormatError(f"{path}: no variable '{name}' (found: {found})")
    value = mat[name]
    if not isinstance(value, np.ndarray) or value.ndim > 2 or (value.ndim == 2 and min(value.shape) > 1):
        shape = getattr(value, "shape", type(value).__name__)
        raise DatasetFormatError(f"{path}: variable '{name}' must be a 1xN array, got shape {shape}")
    return value.ravel(order="F")  # MATLAB's linear order


def _records(mat: dict[str, Any], name: str, path: Path, *, fields: int) -> np.ndarray:
    """A 1xN struct array as a flat array of records, each with exactly ``fields`` fields."""
    records = _variable(mat, name, path)
    names = records.dtype.names
    if not names or len(names) != fields:
        what = f"a struct with fields {', '.join(names)}" if names else f"not a struct array ({records.dtype})"
        raise DatasetFormatError(f"{path}: variable '{name}' must be a struct array with {fields} fields "
                                 f"per entry, got {what}")
    return records


def _unwrap(value: Any) -> Any:
    """A MATLAB value as loaded unsqueezed to ``str`` or a number; cells of one element are opened.

    ``array(['abc'])`` (char) and ``array([[array(['abc'])]], dtype=object)``
    (a 1x1 cell) are ``'abc'``; MATLAB ``''`` is ``''``; ``array([[1.]])``
    is ``1.0``. Anything else comes back as it is.
    """
    while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.ravel()[0]
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "U":
            if value.size == 0:
                return ""
            if value.size == 1:
                return str(value.ravel()[0])
        elif value.dtype.kind in "iuf" and value.size == 1:
            return value.ravel()[0].item()
    return value


def _nonempty_text(value: Any, field: str, path: Path) -> str:
    text = _unwrap(value)
    if not isinstance(text, str) or not text.strip():
        raise DatasetFormatError(f"{path}: {field} must be a non-empty string, got {text!r}")
    return text


def _categories(mat: dict[str, Any], n: int, path: Path) -> list[int]:
    values = _variable(mat, "category", path)
    if values.dtype.kind not in "iuf" or len(values) != n:
        raise DatasetFormatError(f"{path}: variable 'category' must hold one number per pair ({n}, as "
                                 f"'new_input'), got {len(values)} of type {values.dtype}")
    for i, c in enumerate(values, start=1):
        if c not in CATEGORIES:
            raise DatasetFormatError(f"{path}: category({i}) is {c.item()!r}, not one of 1 (HC), 2 (HI), 3 (HM), 4 (MM)")
    categories = [int(c) for c in values]
    if "new_data" in mat:
        _check_sources(np.asarray(mat["new_data"]), categories, path)
    return categories


def _check_sources(codes: np.ndarray, categories: list[int], path: Path) -> None:
    """The public readers' sanity check of ``category`` against the candidates' sources ``new_data``."""
    if codes.dtype.kind not in "iuf" or codes.shape != (len(categories), 2):
        raise DatasetFormatError(f"{path}: variable 'new_data' must be {len(categories)}x2 numbers (the two "
                                 f"candidates' sources per pair), got shape {codes.shape} of {codes.dtype}")
    machine = (codes < 6).sum(axis=1)  # (P,)
    derived = ((codes.sum(axis=1) == 12) + 2 * (codes.sum(axis=1) == 13) + 3 * (machine == 1)
               + 4 * (machine == 2))
    wrong = np.flatnonzero(derived != np.asarray(categories))
    if wrong.size:
        i = int(wrong[0])
        raise DatasetFormatError(f"{path}: category({i + 1}) is {categories[i]} but new_data({i + 1},:) = "
                                 f"{codes[i].tolist()} makes it {int(derived[i])} "
                                 f"({wrong.size} such pairs)")


def _triplet(record: Any, j: int, path: Path) -> tuple[str, str, str, int]:
    """``(reference, candidate B, candidate C, 1 if B was chosen else -1)`` of ``triplets(j)``, stripped."""
    ref, first, second = (_nonempty_text(record[f], f"triplets({j}).{name}", path).strip()
                          for f, name in zip(range(3), "ABC"))
    choice = _unwrap(record[3])
    if isinstance(choice, bool) or not isinstance(choice, (int, float)) or not math.isfinite(choice):
        raise DatasetFormatError(f"{path}: triplets({j}).D must be a number (1: B chosen, else C), got {choice!r}")
    return ref, first, second, 1 if choice == 1 else -1
