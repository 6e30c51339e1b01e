"""The pure-Python ruDALL-E tokenizer against output recorded from the real youtokentome 1.0.6.

tests/data/yttm/bpe.model was trained by youtokentome on tests/data/yttm/corpus.txt, and expected.json holds what
youtokentome's encode/decode returned for strings outside that corpus; tests/data/yttm/make_expected.py made both.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from dreamcanvas.dalle.tokenizer import BPEModel, RudalleTokenizer
from dreamcanvas.errors import DreamcanvasError

DATA = Path(__file__).parent / "data" / "yttm"
MODEL = DATA / "bpe.model"
EXPECTED = json.loads((DATA / "expected.json").read_text(encoding="utf-8"))
CASES = EXPECTED["cases"]
RUDALLE_IGNORED = [3, 2, 1, 0]  # eos, bos, unk, pad: what ru-dalle's decode_text skips
CYRILLIC = re.compile("[а-яё]", re.IGNORECASE)


@pytest.fixture(scope="module")
def bpe() -> BPEModel:
    return BPEModel.load(MODEL)


@pytest.fixture(scope="module")
def tok(bpe: BPEModel) -> RudalleTokenizer:
    return RudalleTokenizer(bpe)


def case_id(case: dict) -> str:
    return ascii(case["text"][:30])


def test_recorded_data_is_what_it_claims() -> None:
    assert EXPECTED["youtokentome_version"] == "1.0.6"
    assert len(CASES) >= 100
    texts = [c["text"] for c in CASES]
    assert "" in texts and "  ёжик  в   тумане  " in texts and "山水画" in texts and any(len(t) >= 300 for t in texts)


def test_vocab_matches_youtokentome(bpe: BPEModel) -> None:
    assert bpe.vocab_size == EXPECTED["vocab_size"] == 800
    assert bpe.vocab() == EXPECTED["vocab"]
    assert bpe.specials.pad == 0 and bpe.specials.unk == 1 and bpe.specials.bos == 2 and bpe.specials.eos == 3
    for token_id, subword in enumerate(EXPECTED["vocab"]):
        assert bpe.subword_to_id(subword) == token_id
    assert bpe.subword_to_id("no such subword") == 1


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_encode_matches_youtokentome(bpe: BPEModel, case: dict) -> None:
    text = case["text"]
    assert bpe.encode(text) == case["ids"]
    assert bpe.encode(text, bos=True, eos=True) == case["ids_bos_eos"]
    assert bpe.encode_pieces(text) == case["pieces"]


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_decode_matches_youtokentome(bpe: BPEModel, case: dict) -> None:
    assert bpe.decode(case["ids"]) == case["decoded"]
    assert bpe.decode(case["ids_bos_eos"]) == case["decoded_bos_eos"]
    assert bpe.decode(case["ids_bos_eos"], ignore_ids=RUDALLE_IGNORED) == case["decoded_bos_eos_ignored"]


def test_decode_of_special_ids_and_errors_match_youtokentome(bpe: BPEModel) -> None:
    for entry in EXPECTED["decodes"]:
        assert bpe.decode(entry["ids"]) == entry["decoded"]
    for entry in EXPECTED["decode_errors"]:
        with pytest.raises(ValueError) as err:
            bpe.decode(entry["ids"])
        assert str(err.value) == entry["error"]


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_rudalle_layout_matches_rudalle(tok: RudalleTokenizer, case: dict) -> None:
    encoded = tok.encode_text(case["text"])
    assert encoded.dtype == torch.long and encoded.shape == (128,)
    assert encoded.tolist() == case["rudalle_ids"]
    assert tok.decode_text(encoded) == case["rudalle_decoded"]


def test_rudalle_layout_short_prompt(tok: RudalleTokenizer, bpe: BPEModel) -> None:
    encoded = tok.encode_text("  Ёжик В Тумане ")  # ru-dalle's pipeline lower-cases and strips
    words = bpe.encode("ёжик в тумане")
    assert 0 < len(words) < 10
    assert encoded.tolist() == [2, *words, 3] + [0] * (128 - len(words) - 2)
    assert tok.decode_text(encoded) == "ёжик в тумане"
    assert tok.decode_text(encoded.tolist()) == "ёжик в тумане"
    empty = tok.encode_text("")
    assert empty.tolist() == [2, 3] + [0] * 126
    assert tok.encode_text("ёжик", text_seq_length=8).tolist() == [2, *bpe.encode("ёжик"), 3] + [0] * (
        6 - len(bpe.encode("ёжик"))
    )
    assert len(tok) == tok.vocab_size == 800


def test_rudalle_layout_long_prompt_is_cut_with_its_eos(tok: RudalleTokenizer, bpe: BPEModel) -> None:
    prompt = "ёжик в тумане " * 60
    words = bpe.encode(prompt.strip())
    assert len(words) > 126
    encoded = tok.encode_text(prompt)
    assert encoded.tolist() == [2, *words[:127]]  # ru-dalle cuts after adding eos: no eos, no pad
    assert 3 not in encoded.tolist() and 0 not in encoded.tolist()


def test_rudalle_layout_at_the_boundary(tok: RudalleTokenizer, bpe: BPEModel) -> None:
    n = len(bpe.encode("ёжик"))
    fits = " ".join(["ёжик"] * (126 // n))  # exactly 126 ids, then bos + eos = 128
    assert len(bpe.encode(fits)) == 126
    assert tok.encode_text(fits).tolist() == [2, *bpe.encode(fits), 3]
    over = fits + " ёжик"
    assert tok.encode_text(over).tolist() == [2, *bpe.encode(over)[:127]]


def test_russian_prompt_reaches_the_model_as_cyrillic_tokens(tok: RudalleTokenizer, bpe: BPEModel) -> None:
    encoded = tok.encode_text("Красный круг на синем фоне, зелёный ёжик в тумане").tolist()
    body = encoded[1 : encoded.index(3)]
    assert encoded[0] == 2 and len(body) >= 8
    assert 1 not in body  # nothing unknown
    for token_id in body:
        piece = bpe.decode([token_id])
        assert CYRILLIC.search(piece) or piece == ",", (token_id, piece)


def test_unknown_characters_become_one_unk_per_run(bpe: BPEModel) -> None:
    assert bpe.encode("中中中") == [4, 1]  # "▁" then one unk for the whole run
    assert bpe.encode("a中b中c").count(1) == 2


def test_encode_is_fast_enough_for_long_input(bpe: BPEModel) -> None:
    ids = bpe.encode("электроэнцефалографический " * 200 + "а" * 5000)
    assert len(ids) > 200


def write(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "bpe.model"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="ascii")
    return path


def good_text() -> str:
    return MODEL.read_text(encoding="ascii")


def damaged_models() -> dict[str, str | bytes]:
    text = good_text()
    lines = text.splitlines()
    space_line = next(i for i, line in enumerate(lines) if line.split()[0] == "9601")
    no_space = "\n".join([*lines[:space_line], f"9602 {lines[space_line].split()[1]}", *lines[space_line + 1 :]])
    n_chars = int(lines[0].split()[0])
    bad_rule = "\n".join([*lines[: 1 + n_chars], "5000 4 799", *lines[2 + n_chars :]])
    return {
        "empty": "",
        "truncated": text[: len(text) // 2],
        "extra": text + "1 2 3\n",
        "binary": bytes(range(256)) * 4,
        "words": "this is not a model\n",
        "no_space_marker": no_space,
        "bad_rule": bad_rule,
        "bad_specials": text[: text.rstrip().rindex("\n")] + "\n1 1 2 3\n",
    }


@pytest.mark.parametrize("name", list(damaged_models()))
def test_damaged_model_is_one_line_error(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, damaged_models()[name])
    with pytest.raises(DreamcanvasError) as err:
        BPEModel.load(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "damaged" in message
    with pytest.raises(DreamcanvasError):
        RudalleTokenizer.load(path)


def test_missing_model_is_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "bpe.model"
    with pytest.raises(DreamcanvasError) as err:
        RudalleTokenizer.load(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value) and "not found" in str(err.value)
    with pytest.raises(DreamcanvasError):
        BPEModel.load(tmp_path)  # a directory, not a file


def test_model_with_other_special_ids_is_refused_for_rudalle(tmp_path: Path) -> None:
    text = good_text()
    head, _specials = text.rstrip().rsplit("\n", 1)
    path = write(tmp_path, head + "\n0 1 2 3\n")  # unk and pad swapped: a valid YTTM model, but not ru-dalle's ids
    assert BPEModel.load(path).specials.unk == 0
    with pytest.raises(DreamcanvasError) as err:
        RudalleTokenizer.load(path)
    assert "\n" not in str(err.value) and "pad=0 unk=1 bos=2 eos=3" in str(err.value)
