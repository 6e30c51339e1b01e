"""Make the reference data for tests/test_dalle_tokenizer.py with the real YouTokenToMe.

Not run by the tests. It needs youtokentome, which has no wheel for current Pythons, so build it once in its own venv:

    python3 -m venv /tmp/yttm-venv
    /tmp/yttm-venv/bin/pip install "cython<3" wheel setuptools
    /tmp/yttm-venv/bin/pip install --no-build-isolation youtokentome==1.0.6
    /tmp/yttm-venv/bin/python tests/data/yttm/make_expected.py

It trains bpe.model on corpus.txt (prompts written for this test, public domain) and records what youtokentome's
encode and decode return for CASES (strings that are not the corpus) into expected.json.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
from pathlib import Path

import youtokentome as yttm

HERE = Path(__file__).resolve().parent
VOCAB_SIZE = 800
PAD, UNK, BOS, EOS = 0, 1, 2, 3
TEXT_SEQ_LENGTH = 128

CASES: list[str] = [
    # ordinary prompts, some seen in the corpus, most new
    "ёжик в тумане",
    "красный круг на синем фоне",
    "a lighthouse in a storm",
    "Ёжик В Тумане",
    "ЁЖИК В ТУМАНЕ",
    "синий квадрат на красном фоне",
    "a blue square on a red background",
    "лиса в снегу",
    "a fox in the snow at night",
    "портрет кота в стиле ренессанса",
    "a portrait of a cat in renaissance style",
    "зелёное яблоко на деревянном столе",
    "ночной город под дождём, неон",
    "ракета над тайгой",
    "щегол и чиж на ветке черёмухи",
    "подъёмный кран, объём, съёмка",
    "йод, йети, зайка, май",
    "Ъ ъ Ь ь Й й Ё ё Э э",
    "the quick brown fox jumps over the lazy dog",
    "ТИХИЙ ОКЕАН",
    "MiXeD cAsE пРоМпТ",
    "привет как дела???",
    "клип на русском языке :)",
    "hello, how are you?",
    "hello ... how are you ?",
    # digits and punctuation
    "2024",
    "1913 год, 4k, 8k, 16:9",
    "3.14159265358979",
    "+7 (495) 000-00-00",
    "цена: 99,99 руб.",
    "100%!!!",
    "...",
    "....",
    ".....",
    "!!!!!!",
    "ооооо мммм",
    "Zzzzz...",
    "—",
    "«ёлка» и \"ёлка\" и 'ёлка'",
    "a,b.c;d:e!f?g",
    "C:\\Users\\Художник\\картина.png",
    "x^2 + y^2 = r^2",
    "#зима #winter @artist",
    # emoji, seen and unseen
    "восход 🌄",
    "🚀🚀🚀",
    "кот 🐱 и пёс 🐶",
    "❤️",
    "😀 улыбка",
    "флаг 🏳️‍🌈",
    # characters the model has never seen
    "山水画",
    "日本の桜 и сакура",
    "αβγ δέλτα",
    "Ωmega",
    "مرحبا",
    "שלום עולם",
    "ça va? naïve café",
    "straße, größe, über",
    "zażółć gęślą jaźń",
    "Ї ї Є є Ґ ґ І і",
    "Ў ў",
    "abc中文def",
    "中",
    "a中b中c",
    "中中中 ab 中",
    "™ © ® § ¶ †",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "ﬁne ligature",
    "e\u0301 combining acute",
    "zero\u200bwidth",
    # whitespace: leading, trailing, multiple, tabs, newlines, other spaces
    "",
    " ",
    "   ",
    "\t",
    "\n",
    " \t\n\r\x0b\x0c ",
    "  ёжик",
    "ёжик  ",
    "  ёжик  в   тумане  ",
    "ёжик\tв\nтумане",
    "ёжик\r\nв тумане",
    "a  b   c    d",
    "\x0bvertical\x0ctab",
    "non\xa0breaking\xa0space",
    "en\u2002space and\u3000ideographic",
    "\x1cfile\x1dgroup\x1erecord\x1funit",
    "next\x85line",
    "▁",
    "▁ёжик▁в▁тумане",
    "ёжик▁",
    "a▁▁b",
    # very long words and long prompts
    "а" * 300,
    "ё" * 129,
    "ab" * 200,
    "электроэнцефалографический",
    "рентгеноэлектрокардиографического",
    "Supercalifragilisticexpialidocious",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "длинноеслово" * 20,
    "ёжик в тумане " * 40,
    " ".join(["красный круг на синем фоне"] * 12),
    "a lighthouse in a storm, " * 15,
    "0123456789" * 30,
    "🌄" * 50,
    "ёжик🌄" * 30,
    # single characters
    "a",
    "A",
    "ё",
    "Ё",
    "я",
    "1",
    "!",
    "_",
]

# Id sequences to decode as they are (not produced by encode): specials in odd places.
EXTRA_DECODES: list[list[int]] = [
    [],
    [BOS],
    [BOS, EOS],
    [PAD, PAD, PAD],
    [UNK],
    [UNK, UNK],
    [EOS, BOS, PAD, UNK],
]


def main() -> None:
    corpus = HERE / "corpus.txt"
    model_path = HERE / "bpe.model"
    yttm.BPE.train(
        data=str(corpus), model=str(model_path), vocab_size=VOCAB_SIZE, n_threads=1, pad_id=PAD, unk_id=UNK,
        bos_id=BOS, eos_id=EOS,
    )  # fmt: skip
    bpe = yttm.BPE(model=str(model_path), n_threads=1)
    ignore = [EOS, BOS, UNK, PAD]  # what ru-dalle's decode_text ignores

    cases = []
    for text in CASES:
        ids = bpe.encode([text], output_type=yttm.OutputType.ID)[0]
        ids_be = bpe.encode([text], output_type=yttm.OutputType.ID, bos=True, eos=True)[0]
        pieces = bpe.encode([text], output_type=yttm.OutputType.SUBWORD)[0]
        decoded = bpe.decode([ids])[0]
        decoded_be = bpe.decode([ids_be])[0]
        decoded_be_ignore = bpe.decode([ids_be], ignore_ids=ignore)[0]
        # ru-dalle's pipeline: text.lower().strip(), then YTTMTokenizerWrapper.encode_text (bos + ids + eos, pad with
        # zeros, cut to text_seq_length) and decode_text (decode ignoring the four special ids).
        low = text.lower().strip()
        rd = [BOS] + bpe.encode([low], output_type=yttm.OutputType.ID)[0] + [EOS]
        rd = (rd + [PAD] * (TEXT_SEQ_LENGTH - len(rd)))[:TEXT_SEQ_LENGTH]
        cases.append(
            {
                "text": text,
                "ids": ids,
                "ids_bos_eos": ids_be,
                "pieces": pieces,
                "decoded": decoded,
                "decoded_bos_eos": decoded_be,
                "decoded_bos_eos_ignored": decoded_be_ignore,
                "rudalle_ids": rd,
                "rudalle_decoded": bpe.decode([rd], ignore_ids=ignore)[0],
            }
        )
    decodes = []
    for ids in EXTRA_DECODES:
        out = bpe.decode([ids])
        decodes.append({"ids": ids, "decoded": out[0] if out else None})
    errors = []
    for bad in (-1, bpe.vocab_size(), bpe.vocab_size() + 10):
        try:
            bpe.decode([[5, bad]])
        except ValueError as exc:
            errors.append({"ids": [5, bad], "error": str(exc)})
    result = {
        "note": (
            f"Made by tests/data/yttm/make_expected.py with youtokentome {importlib.metadata.version('youtokentome')} "
            f"(Python {sys.version.split()[0]}): /tmp/yttm-venv/bin/python tests/data/yttm/make_expected.py; "
            f"bpe.model = yttm.BPE.train(corpus.txt, vocab_size={VOCAB_SIZE}, n_threads=1)."
        ),
        "youtokentome_version": importlib.metadata.version("youtokentome"),
        "vocab_size": bpe.vocab_size(),
        "vocab": bpe.vocab(),
        "special_ids": {"pad": PAD, "unk": UNK, "bos": BOS, "eos": EOS},
        "text_seq_length": TEXT_SEQ_LENGTH,
        "cases": cases,
        "decodes": decodes,
        "decode_errors": errors,
    }
    out_path = HERE / "expected.json"
    # Compact, one case per line: small enough to keep in git, still readable in a diff.
    lines = [json.dumps(case, ensure_ascii=False, separators=(",", ":")) for case in result.pop("cases")]
    head = json.dumps(result, ensure_ascii=False, separators=(",", ":"))[:-1]
    out_path.write_text(head + ',"cases":[\n' + ",\n".join(lines) + "\n]}\n", encoding="utf-8")
    print(f"wrote {out_path} ({len(cases)} cases, vocab {bpe.vocab_size()})")


if __name__ == "__main__":
    main()
