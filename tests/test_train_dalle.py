"""``dreamcanvas train dalle``: the BPE learner, the Russian captions, and a tiny run through the real loaders.

The trainer's output folder is what ``dalle --model local:OUT`` reads, so the last tests draw from it with the
real CLI; the VQGAN is a tiny random one saved as taming's yaml + ckpt.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import offline_hub, one_error_line, run_cli, tree
from PIL import Image

from dreamcanvas.dalle.tokenizer import BPEModel, RudalleTokenizer
from dreamcanvas.data import russian
from dreamcanvas.data.russian import adjective, background_words, russian_caption
from dreamcanvas.errors import DreamcanvasError
from dreamcanvas.models.vqgan import VQGAN, VQGANConfig, save_vqgan, taming_config
from dreamcanvas.outputs.png import read_metadata
from dreamcanvas.training.bpe import learn_bpe, model_text, save_bpe
from dreamcanvas.training.dalle import TrainDalleConfig, dalle_loss, train_dalle

# ----------------------------------------------------------------------------------------------- the tokenizer
CAPTIONS = ["a red circle", "a red star on a blue background", "красный круг", "красная звезда на синем фоне",
            "a green heart", "зелёное сердце", "a cat next to a dog", "кошка и собака"] * 5  # fmt: skip


def test_learned_bpe_reads_back_and_encodes_frequent_words_whole(tmp_path: Path) -> None:
    model = learn_bpe(CAPTIONS, vocab_size=200)
    path = tmp_path / "bpe.model"
    save_bpe(model, path)
    loaded = BPEModel.load(path)
    assert loaded.vocab_size <= 200 and loaded.vocab_size > 4 + len(set("".join(CAPTIONS)))
    assert loaded.encode_pieces("красный круг") == ["▁красный", "▁круг"]
    assert loaded.decode(loaded.encode("кошка и собака")) == "кошка и собака"
    tokens = RudalleTokenizer(loaded, text_seq_length=12).encode_text("зелёное сердце")
    assert tokens[0].item() == 2 and tokens.tolist().count(3) == 1 and tokens[-1].item() == 0  # bos, eos, pads


def test_learning_is_deterministic_and_fewer_ids_mean_longer_encodings() -> None:
    assert model_text(learn_bpe(CAPTIONS, 120)) == model_text(learn_bpe(list(CAPTIONS), 120))
    small, large = learn_bpe(CAPTIONS, 50), learn_bpe(CAPTIONS, 120)
    text = "красная звезда на синем фоне"
    assert len(small.encode(text)) > len(large.encode(text))


def test_a_vocabulary_smaller_than_the_alphabet_is_one_clear_error() -> None:
    with pytest.raises(DreamcanvasError, match="--vocab-size 10 is smaller"):
        learn_bpe(CAPTIONS, 10)


# ----------------------------------------------------------------------------------------------- Russian captions
@pytest.mark.parametrize(
    ("stem", "forms"),
    [
        ("красн", ("красный", "красная", "красное", "красные")),
        ("син", ("синий", "синяя", "синее", "синие")),
        ("маленьк", ("маленький", "маленькая", "маленькое", "маленькие")),
        ("больш", ("большой", "большая", "большое", "большие")),
    ],
)
def test_adjectives_agree_with_the_gender_of_the_noun(stem: str, forms: tuple[str, ...]) -> None:
    assert tuple(adjective(stem, gender) for gender in ("m", "f", "n", "pl")) == forms


def test_backgrounds_are_prepositional_and_two_colours_one_compound() -> None:
    assert background_words("blue") == "на синем фоне"
    assert background_words("red and blue") == "на красно-синем фоне"
    assert background_words("blue and white") == "на сине-белом фоне"
    assert background_words("plaid") is None


@pytest.mark.parametrize(
    ("english", "concepts", "expected"),
    [
        ("a red circle on a blue background", ["red circle"], "красный круг на синем фоне"),
        ("a yellow star", ["yellow star"], "жёлтая звезда"),
        ("a green heart on a red and white background", ["green heart"], "зелёное сердце на красно-белом фоне"),
        ("a striped ring", ["striped ring in red and blue"], "полосатое кольцо"),
        ("a small red cat on a white background", ["cat"], "маленькая красная кошка на белом фоне"),
        ("a large cat next to a blue house", ["cat", "house"], "большая кошка и синий дом"),
        ("clip art of a cat, mammals", ["cat"], "клипарт: кошка, млекопитающие"),
        ("a cat emoji", ["cat"], "кошка, эмодзи"),
        ("a small red heart", ["red heart"], "маленькое красное сердце"),
    ],
)
def test_corpus_captions_in_russian(english: str, concepts: list[str], expected: str) -> None:
    assert russian_caption(english, tuple(concepts)) == expected


def test_a_caption_with_an_untranslated_word_has_no_russian_caption() -> None:
    assert russian_caption("a fc on a red background", ("fc",)) is None  # "-" in the table: no meaning
    assert russian_caption("a zqxw", ("zqxw",)) is None  # not in the table at all
    assert russian_caption("clip art of a cat, zqxw folder", ("cat",)) is None


def test_the_translation_tables_are_well_formed() -> None:
    for name in ("russian_concepts.tsv", "russian_contexts.tsv"):
        path = Path(russian.__file__).with_name(name)
        rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("#")]
        assert len(rows) > 100
        for row in rows:
            assert len(row) == 3, row
            english, words, gender = row
            assert english == english.strip().lower() or any(c.isupper() for c in english), row
            assert (words, gender) == ("-", "-") or (
                any("а" <= c.lower() <= "я" or c == "ё" for c in words) and gender in russian.GENDERS
            ), row
    assert russian.concepts()["cat"].words == "кошка"


def test_a_russian_prompt_reaches_the_bundled_guide_as_cyrillic_tokens() -> None:
    """The guide's tokenizer keeps Cyrillic (UTF-8 bytes through open_clip's BPE): nothing is dropped as unknown.

    It costs: a Cyrillic letter is two bytes, so a Russian prompt takes about twice the tokens of its English
    twin, and the guide's 32-token context cuts "зелёная звезда на красном фоне" inside its last word.
    """
    from dreamcanvas.perceptor.clip import load_perceptor

    tokenizer = load_perceptor("bundled:guide").tokenizer

    def kept(text: str) -> list[int]:
        return [int(i) for i in tokenizer([text])[0] if int(i) not in (0, 49406, 49407)]

    assert tokenizer.decode(kept("красный круг")).strip() == "красный круг"
    assert len(kept("красный круг")) > 2 * len(kept("red circle"))
    assert tokenizer.decode(kept("зелёная звезда на красном фоне")).strip() != "зелёная звезда на красном фоне"


# ----------------------------------------------------------------------------------------------- the trainer
COLOURS = {"red": (220, 30, 30), "blue": (40, 90, 220), "green": (40, 160, 60), "yellow": (245, 215, 30)}


def make_corpus(root: Path) -> Path:
    """Eight 16 px pictures with corpus-style captions.jsonl entries (coloured squares and circles)."""
    entries = []
    for index, (colour, rgb) in enumerate(COLOURS.items()):
        for shape in ("square", "circle"):
            picture = Image.new("RGB", (16, 16), (250, 250, 250))
            if shape == "square":
                picture.paste(rgb, (3, 3, 13, 13))
            else:
                from PIL import ImageDraw

                ImageDraw.Draw(picture).ellipse((2, 2, 13, 13), fill=rgb)
            name = f"images/{index}-{shape}.png"
            (root / "images").mkdir(parents=True, exist_ok=True)
            picture.save(root / name)
            concept = f"{colour} {shape}"
            entries.append({"file": name, "caption": f"a {concept}", "concept": concept, "concepts": [concept],
                            "split": "a", "source": "synthetic", "origin": f"shape-{index}"})  # fmt: skip
    entries.append({**entries[0], "file": "images/0-square.png", "split": "test"})  # held out: never trained on
    (root / "captions.jsonl").write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries))
    return root


def make_vqgan(folder: Path) -> Path:
    """A tiny random taming VQGAN for 16 px pictures: f4, 16 codes."""
    torch.manual_seed(3)
    ddconfig = {"double_z": False, "z_channels": 8, "resolution": 16, "in_channels": 3, "out_ch": 3, "ch": 32,
                "ch_mult": [1, 1, 1], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}  # fmt: skip
    vqgan = VQGAN(VQGANConfig(ddconfig, n_embed=16, embed_dim=8))
    folder.mkdir(parents=True, exist_ok=True)
    save_vqgan(vqgan, taming_config(vqgan.config), folder / "vqgan.yaml", folder / "vqgan.ckpt")
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("dalle-corpus"))


@pytest.fixture(scope="module")
def vqgan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_vqgan(tmp_path_factory.mktemp("dalle-vqgan"))


def tiny_config(corpus: Path, vqgan_dir: Path, out: Path, **changes) -> TrainDalleConfig:
    options = {"data_dir": corpus, "out": out, "vqgan": f"local:{vqgan_dir}", "vocab_size": 80, "text_length": 8,
               "layers": 2, "width": 32, "heads": 2, "conv_kernel": 3, "steps": 8, "batch_size": 4, "lr": 3e-3,
               "precision": "fp32", "sample_every": 4, "checkpoint_every": 4, "threads": 1}  # fmt: skip
    return TrainDalleConfig(**{**options, **changes})


def test_training_lowers_the_loss_and_learns_both_languages(corpus: Path, vqgan_dir: Path, tmp_path: Path) -> None:
    result = train_dalle(tiny_config(corpus, vqgan_dir, tmp_path / "run", steps=60, sample_every=60))
    assert result.finished and len(result.loss) == 60
    assert sum(result.loss[-10:]) / 10 < 0.8 * sum(result.loss[:10]) / 10
    assert result.metrics["captions"] == {"en": 8, "ru": 8}  # the test-split entry is not trained on
    assert {p.name for p in (tmp_path / "run").iterdir()} >= {"pytorch_model.bin", "bpe.model", "config.json",
                                                              "samples", "metrics.json", "train_state.pt"}  # fmt: skip


def test_resume_ends_with_the_weights_of_a_straight_run(corpus: Path, vqgan_dir: Path, tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    train_dalle(tiny_config(corpus, vqgan_dir, straight))
    stopped = tmp_path / "stopped"

    def stop_at_4(info) -> None:
        if info.step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # Ctrl-C: the state is saved, then the interrupt goes on
        train_dalle(tiny_config(corpus, vqgan_dir, stopped), on_step=stop_at_4)
    assert torch.load(stopped / "train_state.pt", weights_only=True)["run"]["step"] == 4
    train_dalle(tiny_config(corpus, vqgan_dir, stopped), resume=True)
    a, b = torch.load(straight / "pytorch_model.bin"), torch.load(stopped / "pytorch_model.bin")
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    assert (straight / "bpe.model").read_bytes() == (stopped / "bpe.model").read_bytes()


def test_the_loss_is_the_weighted_text_and_image_cross_entropies(corpus: Path, vqgan_dir: Path) -> None:
    from dreamcanvas.models.rudalle import DalleConfig, DalleModel

    torch.manual_seed(0)
    shape = DalleConfig(num_layers=1, hidden_size=16, num_attention_heads=2, text_seq_length=4,
                        image_tokens_per_dim=2, vocab_size=10 + 4, image_vocab_size=6, conv_kernel=1)  # fmt: skip
    model = DalleModel(shape)
    ids = torch.tensor([[2, 7, 3, 0, 1, 5, 0, 2]])
    losses = dalle_loss(model, ids, image_loss_weight=3.0)
    logits = model(ids)
    text_targets = torch.tensor([7, 3, 13])  # the pad at position 3 is token 10 + 3
    text = torch.nn.functional.cross_entropy(logits[0, :3, :14], text_targets)
    image = torch.nn.functional.cross_entropy(logits[0, 3:7, 14:], torch.tensor([1, 5, 0, 2]))
    assert torch.allclose(losses["loss"], (text + 3 * image) / 4)


def test_the_trained_folder_draws_through_the_dalle_command(corpus: Path, vqgan_dir: Path, tmp_path: Path,
                                                             capsys) -> None:  # fmt: skip
    out = tmp_path / "model"
    code, _, err = run_cli(["train", "dalle", corpus, "--out", out, "--vqgan", f"local:{vqgan_dir}", "--vocab-size",
                            80, "--text-length", 8, "--layers", 2, "--width", 32, "--heads", 2, "--conv-kernel", 3,
                            "--steps", 4, "--batch-size", 4, "--precision", "fp32", "--quiet"], capsys)  # fmt: skip
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["vqgan"] == f"local:{vqgan_dir}"
    code, _, err = run_cli(["dalle", "красный квадрат", "--model", f"local:{out}", "--seed", 1, "--out",
                            tmp_path / "drawn", "--quiet"], capsys)  # fmt: skip
    assert code == 0, err
    with Image.open(tmp_path / "drawn" / "final.png") as picture:
        assert picture.size == (16, 16)  # the model's own VQGAN painted it: 4x4 codes, f4


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--width", 30, "--heads", 4], "--width 30 must be a multiple of --heads 4"),
        (["--languages", "de"], "--languages 'de'"),
        (["--conv-kernel", 4], "--conv-kernel 4 must be odd"),
        (["--vqgan", "no-such-vqgan"], "unknown VQGAN model"),
    ],
)
def test_bad_options_are_one_line_and_write_nothing(corpus: Path, tmp_path: Path, capsys, extra: list,
                                                     message: str) -> None:  # fmt: skip
    before = tree(corpus)
    code, _, err = run_cli(["train", "dalle", corpus, "--out", tmp_path / "out", *extra], capsys)
    assert message in one_error_line(code, err)
    assert not (tmp_path / "out").exists() and tree(corpus) == before


# ----------------------------------------------------------------------------------------------- the bundled model
def test_without_a_model_offline_the_bundled_dalle_draws_with_one_warning(tmp_path: Path, monkeypatch,
                                                                          capsys) -> None:  # fmt: skip
    offline_hub(tmp_path, monkeypatch)
    code, _, err = run_cli(["dalle", "красный круг", "--seed", 3, "--out", tmp_path / "run", "--quiet"], capsys)
    assert code == 0, err
    assert "bundled:dalle draws instead" in err and err.count("warning") == 1
    assert read_metadata(tmp_path / "run" / "final.png")["settings"]["model"] == "bundled:dalle"
    with Image.open(tmp_path / "run" / "final.png") as picture:
        assert picture.size == (64, 64)


def test_without_a_model_offline_and_nothing_bundled_is_the_registry_line(tmp_path: Path, monkeypatch,
                                                                          capsys) -> None:  # fmt: skip
    from dreamcanvas.weights import registry

    offline_hub(tmp_path, monkeypatch)
    monkeypatch.setattr(registry, "bundled_dir", lambda name: tmp_path / "no-bundled" / name)
    code, _, err = run_cli(["dalle", "красный круг", "--out", tmp_path / "run"], capsys)
    assert "rudalle-malevich" in one_error_line(code, err)
    assert not (tmp_path / "run").exists()


def test_the_bundled_dalle_draws_the_colour_it_is_asked_for_in_both_languages() -> None:
    """Red prompts give redder pictures than blue ones, in English and in Russian (mean red minus blue)."""
    from dreamcanvas.dalle.models import load_parts
    from dreamcanvas.dalle.run import decode
    from dreamcanvas.dalle.sampling import sample_image_tokens
    from dreamcanvas.dalle.settings import DalleSettings

    parts = load_parts(DalleSettings(prompt="-", model="bundled:dalle", precision="fp32"))

    def redness(prompt: str) -> float:
        tokens = parts.tokenizer.encode_text(prompt)
        drawn = sample_image_tokens(parts.model, tokens, images=4, top_k=2048, top_p=0.995, seed=11)
        pictures = torch.cat(decode(parts, drawn))
        return float((pictures[:, 0] - pictures[:, 2]).mean())

    for red, blue in (("a red circle", "a blue circle"), ("красный круг", "синий круг"),
                      ("a red star", "a blue star"), ("красная звезда", "синяя звезда")):  # fmt: skip
        assert redness(red) > redness(blue) + 0.1, (red, blue)


# ----------------------------------------------------------------------------------------------- Russian for train clip
def test_pairs_in_languages_follow_each_english_pair_with_its_russian_one(corpus: Path) -> None:
    from dreamcanvas.data.captions import load_pairs
    from dreamcanvas.data.russian import in_languages, parse_languages

    pairs = load_pairs(corpus, split="a")
    both = in_languages(pairs, parse_languages("en,ru"))
    assert [index for index, _ in both] == [i for i in range(len(pairs)) for _ in range(2)]
    assert [pair.caption for _, pair in both[:2]] == ["a red circle", "красный круг"]  # files in sorted order
    assert all(pair.image == pairs[index].image for index, pair in both)
    assert [pair.caption for _, pair in in_languages(pairs, ("ru",))][:1] == ["красный круг"]
    with pytest.raises(DreamcanvasError, match="give en, ru or en,ru"):
        parse_languages("en,en")


def test_train_clip_learns_from_the_russian_captions_too(corpus: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "clip"
    code, printed, err = run_cli(["train", "clip", corpus, "--out", out, "--config", "tiny", "--epochs", 1,
                                  "--batch-size", 4, "--languages", "en,ru", "--eval-split", "",
                                  "--precision", "fp32"], capsys)  # fmt: skip
    assert code == 0, err
    assert "18 training pairs" in printed + err  # 9 entries (eval split off), each in English and Russian
    code, _, err = run_cli(["train", "clip", corpus, "--out", tmp_path / "no", "--languages", "de"], capsys)
    assert "--languages 'de'" in one_error_line(code, err)
    assert not (tmp_path / "no").exists()
