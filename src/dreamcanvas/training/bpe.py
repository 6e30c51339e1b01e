"""Learn a byte-pair-encoding tokenizer from captions and write it as a YouTokenToMe ``bpe.model``.

ruDALL-E reads its prompts with a YouTokenToMe (YTTM) model; :mod:`dreamcanvas.dalle.tokenizer` reads that file
format and encodes as YTTM does. A model trained here is written in the same format, so a small DALL-E of
``dreamcanvas train dalle`` and Malevich are tokenized by one code path. (youtokentome itself only builds from
source, which a CPU laptop may not manage; the learning below is plain BPE, the encoding is YTTM's.)

Learning follows Sennrich et al.: the captions are cut into words at whitespace, each word is "▁" followed by its
characters, and the most frequent adjacent pair of tokens (over all words, weighted by how often each word occurs)
is merged into a new token, until the vocabulary has ``vocab_size`` ids. Ties go to the pair seen first, so the
result depends only on the captions. Pair counts are kept up to date incrementally: each merge touches only the
words that contain its pair.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from itertools import pairwise
from pathlib import Path

from dreamcanvas.dalle.tokenizer import SPACE_CHAR, WHITESPACE, BPEModel, SpecialIds
from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.files import atomic

SPECIALS = SpecialIds(unk=1, pad=0, bos=2, eos=3)
"""ruDALL-E's ids for the four special tokens; characters and merges take the ids after them."""
FIRST_ID = 4


def words_of(text: str) -> list[str]:
    """The words YTTM sees in ``text``: runs of non-whitespace (``▁`` counts as whitespace), lower-cased as ruDALL-E
    lower-cases prompts."""
    words, current = [], []
    for char in text.lower():
        if char in WHITESPACE:
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(char)
    if current:
        words.append("".join(current))
    return words


def learn_bpe(texts: Iterable[str], vocab_size: int) -> BPEModel:
    """A BPE model of at most ``vocab_size`` ids (four specials, the alphabet, then merges) learned from ``texts``."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(words_of(text))
    if not counts:
        raise DreamcanvasError("no words to learn a tokenizer from: every caption is empty")
    alphabet = Counter({SPACE_CHAR: sum(counts.values())})
    for word, count in counts.items():
        for char in word:
            alphabet[char] += count
    if FIRST_ID + len(alphabet) > vocab_size:
        raise DreamcanvasError(f"--vocab-size {vocab_size} is smaller than the captions' {len(alphabet)} characters "
                               f"plus {FIRST_ID} special tokens")  # fmt: skip
    char_ids = {char: FIRST_ID + index for index, (char, _) in enumerate(alphabet.most_common())}
    words = [[char_ids[SPACE_CHAR], *(char_ids[c] for c in word)] for word in counts]
    frequency = list(counts.values())

    pairs: Counter[tuple[int, int]] = Counter()
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    first_seen: dict[tuple[int, int], int] = {}
    for index, tokens in enumerate(words):
        for pair in pairwise(tokens):
            pairs[pair] += frequency[index]
            where[pair].add(index)
            first_seen.setdefault(pair, len(first_seen))

    rules: list[tuple[int, int, int]] = []
    next_id = FIRST_ID + len(char_ids)
    while next_id < vocab_size and pairs:
        best = max(pairs, key=lambda pair: (pairs[pair], -first_seen[pair]))
        if pairs[best] < 2:
            break
        rules.append((best[0], best[1], next_id))
        for index in sorted(where.pop(best, ())):
            tokens, count = words[index], frequency[index]
            for pair in pairwise(tokens):  # forget the word's old pairs
                pairs[pair] -= count
                if pairs[pair] <= 0:
                    del pairs[pair]
            merged, i = [], 0
            while i < len(tokens):
                if i + 1 < len(tokens) and (tokens[i], tokens[i + 1]) == best:
                    merged.append(next_id)
                    i += 2
                else:
                    merged.append(tokens[i])
                    i += 1
            words[index] = merged
            for pair in pairwise(merged):  # and count its new ones
                pairs[pair] += count
                where[pair].add(index)
                first_seen.setdefault(pair, len(first_seen))
        pairs.pop(best, None)
        next_id += 1
    return BPEModel(char_ids=char_ids, rules=rules, specials=SPECIALS)


def model_text(model: BPEModel) -> str:
    """The ``bpe.model`` text of ``model``: header, alphabet, rules, special ids (YTTM's layout)."""
    lines = [f"{len(model.char_ids)} {len(model.rules)}"]
    lines += [f"{ord(char)} {token}" for char, token in model.char_ids.items()]
    lines += [f"{x} {y} {z}" for x, y, z in model.rules]
    specials = model.specials
    lines.append(f"{specials.unk} {specials.pad} {specials.bos} {specials.eos}")
    return "\n".join(lines) + "\n"


def save_bpe(model: BPEModel, path: Path) -> None:
    """Write ``model`` as ``path`` (atomically), readable by :meth:`BPEModel.load` and by youtokentome."""
    atomic.write_text(path, model_text(model))
