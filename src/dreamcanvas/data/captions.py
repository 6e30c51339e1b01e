"""(image, caption) pairs from a folder, and captions derived from noisy clip-art file names.

Where a caption comes from, first match wins:

1. a sidecar ``NAME.txt`` next to ``NAME.png``;
2. ``captions.jsonl`` (``{"file": ..., "caption": ...}`` per line), then ``captions.csv`` (``file,caption``),
   at the folder's root; extra JSON fields (``concept``, ``split``) are kept;
3. the cleaned file name, with the nearest meaningful folder name as context.

File names from openclipart are noisy: ``canguro_architetto_franc_01.png`` is a kangaroo drawn by Architetto
Francesco Rollandin. :func:`clean_name` turns such names into plain English words.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dreamcanvas.errors import DreamcanvasError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"})
JSONL_NAME = "captions.jsonl"
CSV_NAME = "captions.csv"

TRUNCATED_LENGTHS = range(23, 26)
"""openclipart-png cuts ``title_author`` to 24 characters (one more for a trailing ``_``): in a name of that
length the last word is a cut-off fragment, almost always of the author's name."""


def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


AUTHORS = _word_set(
    """
    aitor ajarn alberto alejandro alex alexander ali amos andrea andreas andremarcel andrei andy angelo ani anita
    anthony anton architetto arjen astrid aubanel benji bob bogdan borja bradley bram brice buculei carlos celso
    charles chaspo chris christian christoph christophe cedric clemente costea crystal darek darkon dave david davek
    dennis didier dirk domas dudziak enrique erich erik erwan ezechiele fabien fabio federico felipe filip fco
    francesco frank frederic fredrik frolland frouke fudriot gabrielle ganson geraint gerald gerhards gerhrads
    ghuul gino glenn guillaume guziec hans havok igor ingo israel jakob james jamin janet jarno jasper jeff jean
    jesper jim joel joerg john jon jonadab jonasste jonathan jonvdveen jordan jorkon josu juliane jure jurgen
    karl kevin kilian konstantin kurt lakshman lauris leif linda lion loz lumen luiz magnus marcelo marcin mariusz
    mark martin mateya matt matthew mauro merzok michael miguel mike mimooh mirko mitchell multimotyl muji nathan
    neil nicolas nicu nurbl nurbldoff olivier omar orbu orlando patricia paul peterm petri philippe ralf raphael
    rikva risto rob robert rollandin roman romus ron rory ross ruud ryan santiago saurabh schwoo sergio seth
    shandy sherrera stefan steffen stepan steve susan tanguy tatiana teudimundo terry tess thom tobias todd tom
    tomek uliphant utrescu vermin victor vladimir wes william yemu yogesh yves zazou
    """
)
"""First words of openclipart authors' names, found by reading the package's file names: a name is cut at
the first of them (what follows is the rest of the author's name, or noise)."""

JARGON = _word_set(
    "alt app application applications apps aiga bw bwh clipart gnome gtk icon icons jpg kde mime "
    "openclipart openclipa pckg plastik png pt rpg step stock svg theme vnd"
)
"""Icon-theme and file-format words that name no visible thing."""

FOREIGN_FILLERS = _word_set(
    "di e del della dei degli con per da sul sulla nella il la le lo gli un una du des et au avec"
)
"""Italian and French articles and prepositions, frequent in openclipart titles."""

TRAILING_FILLERS = _word_set("a an and by for in of on the to with")
"""English words left dangling where a name was cut (``dog_drawn_with_strai...``)."""

TRANSLATIONS = {
    "abeille": "bee", "albero": "tree", "acquila": "eagle", "aquila": "eagle", "arancione": "orange",
    "ballon": "balloon", "bambina": "girl", "bicicletta": "bicycle", "bussola": "compass", "cane": "dog",
    "canguro": "kangaroo", "casa": "house", "cavallo": "horse", "champignon": "mushroom", "chiave": "key",
    "cigno": "swan", "coccinella": "ladybug", "coccinelle": "ladybug", "coccinellona": "ladybug",
    "coniglio": "rabbit", "couronne": "crown", "cronometro": "stopwatch", "dente": "tooth", "donna": "woman",
    "elefante": "elephant", "esperimento": "experiment", "chimico": "chemical", "fabbrica": "factory",
    "farfalla": "butterfly", "farfalle": "butterflies",
    "fiore": "flower", "fiori": "flowers", "finestra": "window", "formica": "ant", "formichina": "ant",
    "formicona": "ant", "gabbiano": "seagull", "gatto": "cat", "giallo": "yellow", "grigia": "grey",
    "grigio": "grey", "leone": "lion", "libellula": "dragonfly", "libellule": "dragonfly", "lucertola": "lizard",
    "lucertolona": "lizard", "lucertolone": "lizard", "lumaca": "snail", "macchina": "machine",
    "microscopio": "microscope", "mondo": "world", "nero": "black", "nuage": "cloud", "orso": "bear",
    "palloncini": "balloons", "pallone": "balloon", "pasteque": "watermelon", "pecora": "sheep", "pera": "pear",
    "pesca": "peach", "pollo": "chicken", "pomodori": "tomatoes", "prugna": "plum", "rana": "frog",
    "rosso": "red", "sapin": "fir tree", "signora": "lady", "signore": "man", "stampante": "printer",
    "tacchino": "turkey", "telecamera": "video camera", "teschio": "skull", "tigre": "tiger", "topo": "mouse",
    "torta": "cake", "trattore": "tractor", "uomo": "man", "verde": "green", "yeux": "eyes",
    "zanzara": "mosquito", "zucca": "pumpkin",
}  # fmt: skip
"""The most frequent foreign words in openclipart titles, in English."""

FOLDER_SKIP = _word_set(
    "action actions apps applications device devices emblems examples filesystems generic icons "
    "mimetypes special stock unsorted duplicates"
)
"""Folder names that say nothing about what a picture shows."""


@dataclass(frozen=True)
class Pair:
    """One training or evaluation example; ``extra`` holds any other JSON fields (``concept``, ``split``)."""

    image: Path
    caption: str
    extra: dict = field(default_factory=dict, compare=False, hash=False)


def _words(text: str) -> list[str]:
    text = re.sub(r"([a-z])([A-Z])", r"\1 \2", text)  # camelCase -> camel Case
    return [word for word in re.split(r"[^a-z]+", text.lower()) if word]


def _strip_numbering(stem: str) -> str:
    """``heart_jon_phillips_01`` -> ``heart_jon_phillips``: the package's running number and trailing ``_``."""
    return re.sub(r"[_\-\s]*\d{1,3}[a-z]?$", "", stem).rstrip("_- ")


def _is_author_fragment(word: str) -> bool:
    return len(word) >= 3 and any(author.startswith(word) for author in AUTHORS)


def clean_name(stem: str) -> str:
    """Plain words from a clip-art file name: authors, digits, jargon and foreign fillers dropped.

    ``canguro_architetto_franc_01`` -> ``kangaroo``; ``gnome-mime-text-x-authors`` -> ``text authors``;
    ``star_95pt06step`` -> ``star``. May return ``""`` when nothing meaningful is left.
    """
    stem = _strip_numbering(Path(stem).stem if Path(stem).suffix.lower() in IMAGE_SUFFIXES else stem)
    words = _words(stem)
    if len(stem) in TRUNCATED_LENGTHS and len(words) > 1:
        words = words[:-1]
    for index, word in enumerate(words):
        if index > 0 and (word in AUTHORS or (index == len(words) - 1 and _is_author_fragment(word))):
            words = words[:index]
            break
    kept: list[str] = []
    for word in words:
        if len(word) < 2 or word in JARGON or word in FOREIGN_FILLERS:
            continue
        for part in TRANSLATIONS.get(word, word).split():
            if part not in kept:
                kept.append(part)
    while kept and kept[-1] in TRAILING_FILLERS:
        kept.pop()
    return " ".join(kept)


def folder_context(parts: tuple[str, ...], name: str) -> str:
    """The deepest folder name that says something the file name does not (``"mammals"``), or ``""``."""
    for part in reversed(parts):
        if "theme" in part.lower():
            continue
        cleaned = clean_name(part)
        if cleaned and cleaned not in FOLDER_SKIP and cleaned not in name and name not in cleaned:
            return cleaned
    return ""


def derive_caption(relative: Path) -> str:
    """A caption from a path alone: ``animals/mammals/canguro_architetto_franc_01.png`` -> ``kangaroo, mammals``."""
    name = clean_name(relative.stem)
    context = folder_context(relative.parent.parts, name)
    if name and context:
        return f"{name}, {context}"
    return name or context or "a picture"


def _read_jsonl(path: Path) -> list[dict]:
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            entry["file"], entry["caption"] = str(entry["file"]), str(entry["caption"])
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            expected = '{"file": ..., "caption": ...}'
            raise DreamcanvasError(f"{path}:{number}: expected {expected} ({error})") from None
        entries.append(entry)
    return entries


def _read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle) if len(row) >= 2 and row[:2] != ["file", "caption"]]
    return [{"file": row[0], "caption": row[1]} for row in rows]


def _keyed(entries: list[dict]) -> dict[str, list[dict]]:
    keyed: dict[str, list[dict]] = {}
    for entry in entries:
        keyed.setdefault(Path(entry["file"]).as_posix(), []).append(entry)
    return keyed


def _root_captions(root: Path) -> dict[str, list[dict]]:
    """Entries of ``captions.jsonl`` and ``captions.csv`` by file path; a file in both keeps the JSONL ones."""
    jsonl, table = root / JSONL_NAME, root / CSV_NAME
    from_csv = _keyed(_read_csv(table)) if table.is_file() else {}
    from_jsonl = _keyed(_read_jsonl(jsonl)) if jsonl.is_file() else {}
    return {**from_csv, **from_jsonl}


def _sidecar_caption(image: Path) -> str | None:
    sidecar = image.with_suffix(".txt")
    if not sidecar.is_file():
        return None
    text = " ".join(sidecar.read_text(encoding="utf-8").split())
    return text or None


def iter_images(root: Path) -> Iterator[Path]:
    """Image files under ``root``, in a stable (sorted) order."""
    yield from sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def load_pairs(root: str | Path, split: str | None = None) -> list[Pair]:
    """Every (image, caption) pair under ``root``; with ``split``, only entries whose ``split`` field matches.

    An image listed several times in ``captions.jsonl`` gives several pairs. Raises a
    :class:`DreamcanvasError` if the folder does not exist or holds no image.
    """
    root = Path(root)
    if not root.is_dir():
        raise DreamcanvasError(f"no such data folder: {root}")
    listed = _root_captions(root)
    pairs: list[Pair] = []
    for image in iter_images(root):
        relative = image.relative_to(root)
        sidecar = _sidecar_caption(image)
        if sidecar is not None:
            pairs.append(Pair(image, sidecar))
        elif relative.as_posix() in listed:
            for entry in listed[relative.as_posix()]:
                extra = {k: v for k, v in entry.items() if k not in ("file", "caption")}
                pairs.append(Pair(image, entry["caption"], extra))
        else:
            pairs.append(Pair(image, derive_caption(relative)))
    if split is not None and split != "all":
        pairs = [pair for pair in pairs if pair.extra.get("split") == split]
    if not pairs:
        where = f" in split {split!r}" if split not in (None, "all") else ""
        raise DreamcanvasError(f"no images{where} under {root}")
    return pairs
