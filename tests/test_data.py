"""Training data: caption cleaning, caption sources, and the clip-art corpus builder on a fake package tree."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli
from PIL import Image, ImageFont

from dreamcanvas.data import clipart
from dreamcanvas.data.captions import clean_name, derive_caption, load_pairs
from dreamcanvas.data.clipart import (
    APT_COMMAND,
    SHAPES,
    build_corpus,
    colour_name,
    concept_split,
    emoji_name,
    parse_fractions,
)
from dreamcanvas.errors import DreamcanvasError


# --------------------------------------------------------------------------------------------- names
@pytest.mark.parametrize(
    ("stem", "expected"),
    [
        ("canguro_architetto_franc_01", "kangaroo"),  # Italian, author, running number
        ("heart_jon_phillips_01", "heart"),  # author and everything after it
        ("fireworks_ganson1", "fireworks"),  # author with a digit glued on
        ("star_95pt06step", "star"),  # digits and generator jargon
        ("medicina_dottore_archite_01", "medicina dottore"),  # cut at 24 characters: the fragment goes
        ("dog_01_drawn_with_strai_02", "dog drawn"),  # a dangling "with" goes too
        ("trumpet_pocket_colour_ganso", "trumpet pocket colour"),  # a truncated author at the end
        ("coccinella_rollandin_arc_01", "ladybug"),
        ("gnome-fs-trash-full", "fs trash full"),  # icon-theme jargon
        ("fireFighterTruck.png", "fire fighter truck"),  # camelCase, extension
        ("70a016", ""),  # nothing meaningful left
    ],
)
def test_clean_name(stem: str, expected: str) -> None:
    assert clean_name(stem) == expected


def test_derived_caption_adds_the_nearest_meaningful_folder() -> None:
    assert derive_caption(Path("animals/mammals/canguro_architetto_franc_01.png")) == "kangaroo, mammals"
    assert derive_caption(Path("computer/icons/lemon-theme/actions/filesave.png")) == "filesave, computer"
    assert derive_caption(Path("plants/trees/tree_01.png")) == "tree, plants"  # "trees" repeats "tree": skipped
    assert derive_caption(Path("70a016.png")) == "a picture"


# --------------------------------------------------------------------------------------------- sources
def picture(path: Path, colour=(200, 30, 30), size: int = 16, alpha: int = 255) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGBA", (size, size), (*colour, alpha)).save(path)
    return path


def test_caption_sources_sidecar_then_jsonl_then_csv_then_file_name(tmp_path: Path) -> None:
    for name in ("a", "b", "c", "dog"):
        picture(tmp_path / f"{name}.png")
    picture(tmp_path / "sub" / "red_apple_jon_phillips_01.png")
    (tmp_path / "a.txt").write_text("  the  sidecar\ncaption \n")
    (tmp_path / "captions.jsonl").write_text(
        json.dumps({"file": "a.png", "caption": "jsonl a"}) + "\n"
        + json.dumps({"file": "b.png", "caption": "jsonl b", "split": "a"}) + "\n"
        + json.dumps({"file": "b.png", "caption": "jsonl b again", "split": "b"}) + "\n"
    )  # fmt: skip
    (tmp_path / "captions.csv").write_text('file,caption\nb.png,csv b\nc.png,"csv c, with comma"\n')
    captions = {}
    for pair in load_pairs(tmp_path):
        captions.setdefault(pair.image.relative_to(tmp_path).as_posix(), []).append(pair.caption)
    assert captions == {
        "a.png": ["the sidecar caption"],
        "b.png": ["jsonl b", "jsonl b again"],
        "c.png": ["csv c, with comma"],
        "dog.png": ["dog"],
        "sub/red_apple_jon_phillips_01.png": ["red apple, sub"],
    }
    assert [pair.caption for pair in load_pairs(tmp_path, split="b")] == ["jsonl b again"]


def test_load_pairs_errors_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(DreamcanvasError, match="no such data folder"):
        load_pairs(tmp_path / "missing")
    with pytest.raises(DreamcanvasError, match="no images"):
        load_pairs(tmp_path)
    picture(tmp_path / "x.png")
    (tmp_path / "captions.jsonl").write_text('{"file": "x.png"}\n')
    with pytest.raises(DreamcanvasError, match=r"captions.jsonl:1"):
        load_pairs(tmp_path)


# --------------------------------------------------------------------------------------------- colours
def test_colour_name_from_the_dominant_hue() -> None:
    assert colour_name(Image.new("RGB", (8, 8), (220, 30, 30))) == "red"
    assert colour_name(Image.new("RGB", (8, 8), (40, 90, 220))) == "blue"
    assert colour_name(Image.new("RGB", (8, 8), (130, 80, 40))) == "brown"  # a dark orange
    assert colour_name(Image.new("RGB", (8, 8), (250, 250, 250))) == "white"
    assert colour_name(Image.new("RGBA", (8, 8), (0, 0, 0, 0))) is None  # nothing opaque
    half = Image.new("RGB", (8, 8), (220, 30, 30))
    half.paste((40, 90, 220), (0, 0, 4, 8))
    assert colour_name(half) is None  # no colour dominates
    # transparent pixels do not vote: a green object on a transparent red canvas is green
    sprite = Image.new("RGBA", (8, 8), (220, 30, 30, 0))
    sprite.paste((40, 160, 60, 255), (2, 2, 6, 6))
    assert colour_name(sprite) == "green"


def test_emoji_legacy_names_are_mapped() -> None:
    assert emoji_name("\u2764") == "red heart"  # HEAVY BLACK HEART
    assert emoji_name("\U0001f697") == "car"  # AUTOMOBILE
    assert emoji_name("\u2b50") == "yellow star"  # WHITE MEDIUM STAR
    assert emoji_name("\U0001f34e") == "red apple"


@pytest.mark.skipif(not clipart.EMOJI_FONT.is_file(), reason="fonts-noto-color-emoji is not installed")
def test_emoji_are_rendered_in_colour_with_names() -> None:
    font = ImageFont.truetype(str(clipart.EMOJI_FONT), clipart.EMOJI_PIXELS)
    apple = clipart.render_emoji("\U0001f34e", font, 32)
    assert apple is not None and apple.concept == "red apple" and apple.colour == "red"
    assert max(apple.image.size) == 32 and apple.image.getchannel("A").getextrema() == (0, 255)  # cut out
    assert clipart.render_emoji("\ue000", font, 32) is None  # no glyph: skipped, not a blank picture
    sprites = list(clipart.iter_emoji(clipart.EMOJI_FONT, 32, limit=3))
    assert len(sprites) == 3 and all(sprite.origin.startswith("U+") for sprite in sprites)


# --------------------------------------------------------------------------------------------- the corpus
FAKE_TREE = {
    "animals/mammals/canguro_architetto_franc_01.png": (150, 90, 40),
    "animals/mammals/cavallo_architetto_franc_05.png": (120, 70, 30),
    "animals/birds/cigno_architetto_frances_01.png": (250, 250, 250),
    "animals/fish/goldfish_jon_phillips_01.png": (245, 140, 20),
    "food/fruit/apple_mateya_01.png": (220, 30, 30),
    "food/fruit/banana_nicu_buculei_01.png": (245, 215, 30),
    "food/fruit/grapes_01.png": (130, 50, 180),
    "plants/trees/tree_01.png": (40, 160, 60),
    "plants/flowers/red_flower_01.png": (220, 30, 30),
    "transportation/bus_01.png": (245, 215, 30),
    "transportation/vehicles/ambulans_romus_01.png": (250, 250, 250),
    "buildings/homes/home1.png": (130, 80, 40),
    "office/scissors_01.png": (128, 128, 128),
    "special/gradients/gradient-blue.png": (40, 90, 220),
    "special/patterns/pattern-dots.png": (20, 20, 20),
    "computer/icons/flat-theme/action/70a016.png": (40, 90, 220),
}


@pytest.fixture(scope="module")
def fake_openclipart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tree shaped like /usr/share/openclipart/png: objects with alpha, textures, 205 stars (capped to 200)."""
    root = tmp_path_factory.mktemp("openclipart") / "png"
    for relative, colour in FAKE_TREE.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        canvas = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
        canvas.paste((*colour, 255), (6, 4, 30, 26))
        canvas.save(path)
    for index in range(205):
        picture(root / "shapes" / "stars" / f"star_{index:02d}pt{index % 7:02d}step.png", (245, 215, 30), 8)
    return root


def build(out: Path, root: Path, **changes) -> dict:
    options = {"size": 32, "seed": 3, "synthetic": 60, "openclipart_root": root, "emoji_font": None}
    return build_corpus(out, **{**options, **changes})


def read_entries(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]


def test_corpus_from_a_fake_package_tree(tmp_path: Path, fake_openclipart: Path) -> None:
    manifest = build(tmp_path / "corpus", fake_openclipart)
    entries = read_entries(tmp_path / "corpus")
    origins = [entry["origin"] for entry in entries if entry["source"] == "openclipart"]

    assert not any(origin.startswith("special/") for origin in origins)  # textures dropped
    assert sum(origin.startswith("shapes/stars/") for origin in origins) == 200  # capped
    assert "computer/icons/flat-theme/action/70a016.png" not in origins  # no name left: skipped
    assert len(origins) == 13 + 200  # 14 objects that are not textures, one of them unnamed; 200 stars
    assert manifest["sources"]["openclipart"]["skipped"] == {"unnamed": 1}
    assert manifest["sources"]["openclipart"]["dropped_textures"] == 2
    assert manifest["counts"]["by_source"] == {"openclipart": 213, "synthetic": 60}
    assert manifest["counts"]["pictures"] == len(entries) == 273

    kangaroo = next(e for e in entries if e["origin"] == "animals/mammals/canguro_architetto_franc_01.png")
    assert kangaroo["concept"] == "kangaroo" and "kangaroo" in kangaroo["caption"]
    for entry in entries:
        with Image.open(tmp_path / "corpus" / entry["file"]) as image:
            assert image.size == (32, 32) and image.mode == "RGB"
    assert manifest["captions_sha256"] and manifest["seed"] == 3 and manifest["size"] == 32


def test_split_is_by_concept_and_halves_are_disjoint(tmp_path: Path, fake_openclipart: Path) -> None:
    fractions = (0.45, 0.45, 0.10)
    build(tmp_path / "corpus", fake_openclipart, synthetic=120, fractions=fractions)
    concepts_of: dict[str, set[str]] = {"a": set(), "b": set(), "test": set()}
    for entry in read_entries(tmp_path / "corpus"):
        for concept in entry["concepts"]:  # "X next to Y" pictures: both objects from the picture's split
            assert concept_split(concept, 3, fractions) == entry["split"], entry
        concepts_of[entry["split"]].update(entry["concepts"])
    assert concepts_of["a"] and concepts_of["b"]
    assert not concepts_of["a"] & concepts_of["b"]
    assert not (concepts_of["a"] | concepts_of["b"]) & concepts_of["test"]


def test_corpus_is_reproducible_from_its_seed(tmp_path: Path, fake_openclipart: Path) -> None:
    first = build(tmp_path / "one", fake_openclipart)
    second = build(tmp_path / "two", fake_openclipart)
    assert (tmp_path / "one" / "captions.jsonl").read_bytes() == (tmp_path / "two" / "captions.jsonl").read_bytes()
    assert first == second
    for entry in read_entries(tmp_path / "one")[-5:]:  # synthetic pictures, drawn from the seed
        assert (tmp_path / "one" / entry["file"]).read_bytes() == (tmp_path / "two" / entry["file"]).read_bytes()
    other = build(tmp_path / "three", fake_openclipart, seed=4)
    assert other["captions_sha256"] != first["captions_sha256"]


def test_concept_split_is_deterministic_and_follows_the_fractions() -> None:
    names = [f"concept {i}" for i in range(3000)]
    splits = [concept_split(name, 0, (0.45, 0.45, 0.10)) for name in names]
    assert splits == [concept_split(name, 0, (0.45, 0.45, 0.10)) for name in names]
    assert 0.08 < splits.count("test") / len(names) < 0.12
    assert 0.42 < splits.count("a") / len(names) < 0.48
    assert splits != [concept_split(name, 1, (0.45, 0.45, 0.10)) for name in names]
    assert parse_fractions("45,45,10") == pytest.approx((0.45, 0.45, 0.10))
    with pytest.raises(DreamcanvasError, match="--split"):
        parse_fractions("50,50")


def test_mix_sets_the_share_of_each_synthetic_kind(tmp_path: Path, fake_openclipart: Path) -> None:
    shapes_only = build(tmp_path / "shapes", fake_openclipart, synthetic=40, mix=(0.0, 0.0, 1.0, 0.0))
    assert shapes_only["sources"]["synthetic"] == {
        "mix": {"one": 0.0, "two": 0.0, "shape": 1.0, "pattern": 0.0}, "shape": 40
    }  # fmt: skip
    synthetic = [e for e in read_entries(tmp_path / "shapes") if e["source"] == "synthetic"]
    assert all(e["origin"].startswith("shape-") and e["concept"].split()[-1] in SHAPES for e in synthetic)
    no_shapes = build(tmp_path / "objects", fake_openclipart, synthetic=40, mix=(0.5, 0.5, 0.0, 0.0))
    assert "shape" not in no_shapes["sources"]["synthetic"]
    kinds = ("ONE", "TWO", "SHAPE", "PATTERN")
    assert parse_fractions("55,25,20", "--mix", kinds, optional=1) == pytest.approx((0.55, 0.25, 0.20, 0.0))
    assert parse_fractions("3,1,3,3", "--mix", kinds, optional=1) == pytest.approx((0.3, 0.1, 0.3, 0.3))
    for bad in ("1,-1,1", "1,1", "1,1,1,1,1"):
        with pytest.raises(DreamcanvasError, match=r"--mix wants non-negative shares ONE,TWO,SHAPE\[,PATTERN\]"):
            parse_fractions(bad, "--mix", kinds, optional=1)


def test_patterned_shapes_keep_to_their_half_and_are_captioned_without_colours(
    tmp_path: Path, fake_openclipart: Path
) -> None:
    manifest = build(tmp_path / "patterns", fake_openclipart, synthetic=60, mix=(0.0, 0.0, 0.0, 1.0))
    assert manifest["sources"]["synthetic"]["pattern"] == 60
    synthetic = [e for e in read_entries(tmp_path / "patterns") if e["source"] == "synthetic"]
    for entry in synthetic:
        (pattern, shape), colours = (part.split() for part in entry["concept"].split(" in "))
        assert pattern in clipart.PATTERNS and shape in SHAPES
        for colour in colours[::2]:  # "red and blue": a held-out "red ring" is never drawn, not even in stripes
            assert concept_split(f"{colour} {shape}", 3, (0.45, 0.45, 0.10)) == entry["split"], entry
        subject = entry["caption"].split(" on a ")[0].split()  # the background clause may name colours
        assert subject[-1] == shape and not set(subject) & set(clipart.COLOURS), entry["caption"]
    assert len({e["concept"] for e in synthetic}) > 50  # fine-grained concepts: pattern, shape and colours


def test_a_pattern_fills_a_shape_with_two_colours_and_an_outline_leaves_its_inside_empty() -> None:
    rng = random.Random(0)
    striped = clipart.pattern_sprite("circle", "striped", ("red", "blue"), 48, rng)
    opaque = np.asarray(striped)[np.asarray(striped)[..., 3] == 255][:, :3]
    assert {tuple(c) for c in opaque} == {clipart.COLOURS["red"], clipart.COLOURS["blue"]}
    outline = clipart.pattern_sprite("circle", "outlined", ("green",), 48, rng)
    alpha = np.asarray(outline)[..., 3]
    assert alpha[alpha.shape[0] // 2, alpha.shape[1] // 2] == 0  # the middle is empty
    assert (alpha > 127).mean() < 0.4 * (np.asarray(striped)[..., 3] > 127).mean()


def test_cli_builds_a_corpus_and_refuses_to_mix_builds(tmp_path: Path, fake_openclipart: Path, capsys) -> None:
    args = ["data", "clipart", tmp_path / "c", "--openclipart-root", fake_openclipart, "--no-emoji",
            "--synthetic", "10", "--size", "24", "--quiet"]  # fmt: skip
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["counts"]["pictures"] == 213 + 10 and manifest["size"] == 24
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "--overwrite" in err
    code, _, err = run_cli([*args, "--overwrite"], capsys)
    assert code == 0, err


def test_missing_debian_packages_give_one_clear_error(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(["data", "clipart", tmp_path / "c", "--openclipart-root", tmp_path / "nope"], capsys)
    assert code == 2
    assert err.count("\n") == 1 and APT_COMMAND in err


def test_an_emoji_font_that_is_no_font_is_one_line_before_anything_is_built(tmp_path: Path) -> None:
    (tmp_path / "clipart").mkdir()
    (tmp_path / "notes.txt").write_text("not a font")
    with pytest.raises(DreamcanvasError, match=r"--emoji-font .*notes.txt: not a font Pillow can read"):
        clipart.check_sources(tmp_path / "clipart", tmp_path / "notes.txt")
