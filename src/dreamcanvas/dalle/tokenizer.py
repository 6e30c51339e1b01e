"""ruDALL-E's text tokenizer in pure Python, so that drawing needs no compiled youtokentome.

ruDALL-E tokenizes prompts with a YouTokenToMe (YTTM) BPE model, ``bpe.model``. youtokentome ships only as an sdist
that needs Cython and a C++ compiler, so this module reads the same file and reproduces YTTM 1.0.6's encoding and
decoding id for id (tests/test_dalle_tokenizer.py checks it against output recorded from the real library).

The ``bpe.model`` format is whitespace-separated decimal integers::

    n_chars n_rules
    codepoint id        (n_chars lines: the alphabet, U+2581 "▁" among them)
    x y z               (n_rules lines, in priority order: tokens x and y merge into token z)
    unk pad bos eos     (special ids; -1 for one the model has not)

How YTTM encodes a sentence (dropout off): trailing whitespace is dropped, then the text is cut into words at runs of
whitespace, where whitespace is the six ASCII ``isspace`` characters and "▁" itself (not NBSP or other Unicode spaces).
Each word becomes "▁" followed by its characters; a run of characters missing from the alphabet becomes one unknown
token. Then, repeatedly, the adjacent pair whose rule comes first in the file is merged, the leftmost one on ties,
until no pair has a rule. Unknown tokens come out as the unk id.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dreamcanvas.errors import CorruptWeightsError, ModelUnavailableError

SPACE_CHAR = "\u2581"  # "▁": YTTM's word-start marker; it also counts as whitespace in input text
WHITESPACE = frozenset(" \t\n\v\f\r" + SPACE_CHAR)  # C isspace() below 256, as YTTM tests it, plus "▁"
_MERGED = -(1 << 62)  # a merged-away node in BPEModel._merge: below every id and unknown-run placeholder
UNK_TOKEN, PAD_TOKEN, BOS_TOKEN, EOS_TOKEN = "<UNK>", "<PAD>", "<BOS>", "<EOS>"


@dataclass(frozen=True)
class SpecialIds:
    """YTTM's four special ids; ``-1`` means the model was trained without that token (unk always exists)."""

    unk: int = 1
    pad: int = 0
    bos: int = 2
    eos: int = 3

    def present(self) -> dict[int, str]:
        """Id -> printed token for the specials the model has, in the order YTTM checks them."""
        named = ((self.unk, UNK_TOKEN), (self.pad, PAD_TOKEN), (self.bos, BOS_TOKEN), (self.eos, EOS_TOKEN))
        return {i: name for i, name in named if i != -1}


@dataclass
class BPEModel:
    """A YouTokenToMe BPE model: alphabet, merge rules in priority order, and special ids.

    Build it with :meth:`load`; the constructor takes already-checked parts.
    """

    char_ids: dict[str, int] = field(repr=False)  # character -> token id
    rules: list[tuple[int, int, int]] = field(repr=False)  # (x, y, z): x then y merges into z; earlier rules win
    specials: SpecialIds = field(default_factory=SpecialIds)

    def __post_init__(self) -> None:
        # Lookup tables derived once, so that encoding a prompt is a few dict lookups per character.
        self._rank: dict[tuple[int, int], int] = {}
        for rank, (x, y, _z) in enumerate(self.rules):
            self._rank[(x, y)] = rank  # a repeated pair keeps its last rank, as YTTM's rule table does
        self._text: dict[int, str] = {i: ch for ch, i in self.char_ids.items()}  # id -> its characters
        for x, y, z in self.rules:
            self._text[z] = self._text[x] + self._text[y]
        self._space_id = self.char_ids[SPACE_CHAR]
        self._special_names = self.specials.present()
        # What decode appends for each id: a leading "▁" reads as a space.
        self._decoded: dict[int, str] = {i: " " + t[1:] if t[0] == SPACE_CHAR else t for i, t in self._text.items()}
        self._decoded.update(self._special_names)
        self._by_piece: dict[str, int] = {}
        for i in sorted(self._text):
            self._by_piece.setdefault(self._text[i], i)

    @classmethod
    def load(cls, path: str | Path) -> BPEModel:
        """Read a YTTM ``bpe.model``, checking it fully: a damaged file must fail here, not draw from wrong tokens."""
        path = Path(path)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise ModelUnavailableError(f"BPE tokenizer model not found: {path}") from None
        except OSError as exc:
            raise ModelUnavailableError(f"cannot read BPE tokenizer model {path}: {exc.strerror or exc}") from None
        return cls.parse(raw, source=str(path))

    @classmethod
    def parse(cls, raw: bytes | str, source: str = "<bytes>") -> BPEModel:
        """Parse the text of a ``bpe.model`` (see the module docstring); ``source`` names it in errors."""

        def damaged(why: str) -> CorruptWeightsError:
            return CorruptWeightsError(f"BPE tokenizer model {source} is damaged ({why}); download bpe.model again")

        try:
            text = raw.decode("ascii") if isinstance(raw, bytes) else raw
            numbers = [int(word) for word in text.split()]
        except (UnicodeDecodeError, ValueError):
            raise damaged("not a YouTokenToMe model: it should hold only integers") from None
        if len(numbers) < 2:
            raise damaged("empty or truncated header")
        n_chars, n_rules = numbers[0], numbers[1]
        if n_chars < 1 or n_rules < 0:
            raise damaged(f"bad header: {n_chars} characters, {n_rules} rules")
        expected = 2 + 2 * n_chars + 3 * n_rules + 4
        if len(numbers) != expected:
            what = "truncated" if len(numbers) < expected else "extra data at the end"
            raise damaged(f"{what}: {len(numbers)} numbers where the header promises {expected}")
        pos = 2
        char_ids: dict[str, int] = {}
        for _ in range(n_chars):
            codepoint, token = numbers[pos], numbers[pos + 1]
            pos += 2
            if not (0 <= codepoint < 0x110000) or 0xD800 <= codepoint <= 0xDFFF:
                raise damaged(f"invalid character code {codepoint}")
            ch = chr(codepoint)
            if ch in char_ids:
                raise damaged(f"character U+{codepoint:04X} listed twice")
            char_ids[ch] = token
        if SPACE_CHAR not in char_ids:
            raise damaged('the word marker "▁" (U+2581) is missing from the alphabet')
        known = set(char_ids.values())
        if len(known) != n_chars:
            raise damaged("two characters share one id")
        rules: list[tuple[int, int, int]] = []
        for _ in range(n_rules):
            x, y, z = numbers[pos : pos + 3]
            pos += 3
            if x not in known or y not in known:
                raise damaged(f"rule {x} {y} -> {z} merges an id not defined before it")
            if z in known:
                raise damaged(f"rule {x} {y} -> {z} reuses id {z}")
            known.add(z)
            rules.append((x, y, z))
        unk, pad, bos, eos = numbers[pos : pos + 4]
        specials = SpecialIds(unk=unk, pad=pad, bos=bos, eos=eos)
        named = [i for i in (unk, pad, bos, eos) if i != -1]
        vocab_size = len(known) + len(named)
        if unk < 0 or any(i < -1 for i in (pad, bos, eos)) or len(set(named)) != len(named) or known & set(named):
            raise damaged(f"bad special ids unk={unk} pad={pad} bos={bos} eos={eos}")
        if known | set(named) != set(range(vocab_size)):
            raise damaged(f"token ids do not fill 0..{vocab_size - 1}")
        return cls(char_ids=char_ids, rules=rules, specials=specials)

    @property
    def vocab_size(self) -> int:
        """Number of ids: characters + merged tokens + specials (YTTM's ``vocab_size()``)."""
        return len(self._text) + len(self._special_names)

    def _words(self, text: str) -> Iterable[tuple[list[int], dict[int, str]]]:
        """Each word of ``text`` as "▁" + character ids, with a run of unknown characters as one negative id.

        Also yields what each negative id stands for (only :meth:`encode_pieces` needs it).
        """
        word: list[int] = []
        runs: dict[int, str] = {}
        for ch in text:
            if ch in WHITESPACE:
                if word:
                    yield word, runs
                    word, runs = [], {}
                continue
            if not word:
                word = [self._space_id]
            token = self.char_ids.get(ch)
            if token is not None:
                word.append(token)
            elif word[-1] < 0:
                runs[word[-1]] += ch  # unknown characters in a row make one unknown token
            else:
                word.append(-len(word))  # distinct negative per run: never in a rule, so never merged
                runs[word[-1]] = ch
        if word:
            yield word, runs

    def _merge(self, word: list[int]) -> list[int]:
        """Apply merge rules to one word: always the highest-priority pair, leftmost on ties."""
        rank = self._rank
        rules = self.rules
        tokens = list(word)  # _MERGED marks a node merged into its left neighbour
        nxt = [*range(1, len(word)), -1]
        prv = list(range(-1, len(word) - 1))
        heap = [(r, i) for i in range(len(word) - 1) if (r := rank.get((word[i], word[i + 1]))) is not None]
        heapq.heapify(heap)
        while heap:
            r, i = heapq.heappop(heap)
            j = nxt[i]
            if j == -1 or rank.get((tokens[i], tokens[j])) != r:
                continue  # stale: one side has merged since this pair was queued
            tokens[i] = rules[r][2]
            tokens[j] = _MERGED
            k = nxt[j]
            nxt[i] = k
            if k != -1:
                prv[k] = i
                if (r2 := rank.get((tokens[i], tokens[k]))) is not None:
                    heapq.heappush(heap, (r2, i))
            h = prv[i]
            if h != -1 and (r2 := rank.get((tokens[h], tokens[i]))) is not None:
                heapq.heappush(heap, (r2, h))
        return [t for t in tokens if t != _MERGED]

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        """Token ids of ``text``, as YTTM's ``encode(..., output_type=ID, bos=..., eos=...)`` with dropout 0."""
        for wanted, token_id, name in ((bos, self.specials.bos, BOS_TOKEN), (eos, self.specials.eos, EOS_TOKEN)):
            if wanted and token_id == -1:
                raise ValueError(f"Can't add {name} token. Model was trained without it.")
        ids = [self.specials.bos] if bos else []
        unk = self.specials.unk
        for word, _runs in self._words(text):
            ids.extend(t if t >= 0 else unk for t in self._merge(word))
        if eos:
            ids.append(self.specials.eos)
        return ids

    def encode_pieces(self, text: str) -> list[str]:
        """The subword strings of ``text`` ("▁" marks a word start; unknown runs come out as written), for debugging."""
        pieces: list[str] = []
        for word, runs in self._words(text):
            pieces.extend(self._text[t] if t >= 0 else runs[t] for t in self._merge(word))
        return pieces

    def id_to_subword(self, token_id: int) -> str:
        """The subword an id stands for, "▁" kept (YTTM's ``id_to_subword``); specials print as ``<PAD>`` etc."""
        self._check_id(token_id)
        return self._special_names.get(token_id) or self._text[token_id]

    def subword_to_id(self, subword: str) -> int:
        """Inverse of :meth:`id_to_subword`; an unknown subword gives the unk id, as YTTM does."""
        for token_id, name in self._special_names.items():
            if name == subword:
                return token_id
        return self._by_piece.get(subword, self.specials.unk)

    def vocab(self) -> list[str]:
        """Every subword, indexed by id (YTTM's ``vocab()``)."""
        return [self.id_to_subword(i) for i in range(self.vocab_size)]

    def _check_id(self, token_id: int) -> None:
        if not 0 <= token_id < self.vocab_size:
            raise ValueError(
                "id must be in the range [0, vocab_size - 1]. "
                f"Current value: vocab_size = {self.vocab_size}; id={token_id};"
            )

    def decode(self, ids: Iterable[int], ignore_ids: Iterable[int] = ()) -> str:
        """Text of ``ids`` as YTTM's ``decode``: "▁" becomes a space, the text's first one is dropped, and
        specials not in ``ignore_ids`` print as ``<BOS>`` and the like."""
        ignore = set(ignore_ids)
        parts: list[str] = []
        for token_id in ids:
            token_id = int(token_id)
            if token_id in ignore:
                continue
            self._check_id(token_id)
            piece = self._decoded[token_id]
            if not parts and piece.startswith(" "):
                piece = piece[1:]
            parts.append(piece)
        return "".join(parts)


class RudalleTokenizer:
    """ruDALL-E's ``YTTMTokenizerWrapper`` plus its pipeline's prompt clean-up, on :class:`BPEModel`.

    ru-dalle hard-codes the special ids below rather than reading them from the model, so a model whose ids differ
    is refused: with it ru-dalle would feed the network wrong tokens.
    """

    pad_id = 0
    unk_id = 1
    bos_id = 2
    eos_id = 3

    def __init__(self, bpe: BPEModel, text_seq_length: int = 128) -> None:
        got = bpe.specials
        if (got.pad, got.unk, got.bos, got.eos) != (self.pad_id, self.unk_id, self.bos_id, self.eos_id):
            raise CorruptWeightsError(
                f"BPE tokenizer model has special ids pad={got.pad} unk={got.unk} bos={got.bos} eos={got.eos}; "
                "ruDALL-E needs pad=0 unk=1 bos=2 eos=3 (use ruDALL-E's own bpe.model)"
            )
        if text_seq_length < 1:
            raise ValueError(f"text_seq_length must be positive, got {text_seq_length}")
        self.bpe = bpe
        self.text_seq_length = text_seq_length

    @classmethod
    def load(cls, path: str | Path, text_seq_length: int = 128) -> RudalleTokenizer:
        """Read ruDALL-E's ``bpe.model`` (from the ``shonenkov/rudalle-utils`` hub repo)."""
        return cls(BPEModel.load(path), text_seq_length)

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def vocab_size(self) -> int:
        """Text vocabulary size (the model's ``vocab_size`` parameter must match it)."""
        return self.bpe.vocab_size

    def encode_text(self, text: str, text_seq_length: int | None = None, *, clean: bool = True) -> torch.Tensor:
        """The 1-D LongTensor ruDALL-E feeds its network: bos, prompt ids, eos, then pad ids to ``text_seq_length``.

        A prompt too long to fit is cut to ``text_seq_length`` ids, eos and all, exactly as ru-dalle cuts it.
        ``clean`` applies ru-dalle's pipeline step ``text.lower().strip()`` first (the model was trained on
        lower-case text); ``clean=False`` is ``YTTMTokenizerWrapper.encode_text`` alone.
        """
        length = self.text_seq_length if text_seq_length is None else text_seq_length
        if clean:
            text = text.lower().strip()
        tokens = [self.bos_id, *self.bpe.encode(text), self.eos_id]
        tokens = (tokens + [self.pad_id] * (length - len(tokens)))[:length]
        return torch.tensor(tokens, dtype=torch.long)

    def decode_text(self, encoded: torch.Tensor | Sequence[int]) -> str:
        """Prompt text back from ids, skipping pad/unk/bos/eos as ru-dalle's ``decode_text`` does."""
        if isinstance(encoded, torch.Tensor):
            if encoded.dim() != 1:
                raise ValueError(f"decode_text takes one sequence of ids, got shape {tuple(encoded.shape)}")
            encoded = encoded.tolist()
        return self.bpe.decode(encoded, ignore_ids=(self.eos_id, self.bos_id, self.unk_id, self.pad_id))
