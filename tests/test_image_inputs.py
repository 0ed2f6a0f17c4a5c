"""Image inputs of classify, enroll, detect-logos and import-brands: one way of reading an image
(EXIF orientation, 16-bit, truncated files), one way of listing a folder, and enroll's gallery
file handling (blank images, read-only files, failed runs, two enrolls at once).

Images are built in tmp_path from ../shared photos; the commands run as a user runs them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from stream_pipeline.brands.gallery import Gallery
from stream_pipeline.cli import main
from stream_pipeline.core.paths import PROJECT_ROOT
from stream_pipeline.training.classifier.dataset import read_image
from tests.conftest import run_cli

SHIPPED = PROJECT_ROOT / "models" / "brand_classifier" / "gallery.npz"
BRANDS = ("acura", "bmw", "citroen", "ford", "gmc", "hyundai", "jeep", "mazda", "mini", "nissan", "opel", "peugeot")


@pytest.fixture(scope="module")
def closeups(shared) -> list[Path]:
    """One close-up badge photo of each of BRANDS."""
    return [sorted((shared / "data" / "logos-closeup" / brand).glob("*.jpg"))[1] for brand in BRANDS]


@pytest.fixture(scope="module")
def empty_gallery(tmp_path_factory) -> Path:
    """The shipped gallery with every brand removed: nothing enrolled counts as already held."""
    g = Gallery.load(SHIPPED)
    for brand in list(g.brand_names):
        g.remove(brand)
    path = tmp_path_factory.mktemp("galleries") / "empty.npz"
    g.save(path)
    return path


def _gallery_copy(empty_gallery: Path, path: Path, mode: int = 0o644) -> Path:
    path.write_bytes(empty_gallery.read_bytes())
    os.chmod(path, mode)
    return path


def _portrait(photo: Path, out: Path, orientation: int = 6) -> None:
    """The photo as a phone stores a portrait shot: pixels turned, the EXIF tag saying how to show them."""
    stored = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270, 3: Image.Transpose.ROTATE_180}
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.open(photo).convert("RGB").transpose(stored[orientation]).save(out, exif=exif, quality=95)


def _errors(stderr: str) -> list[str]:
    return stderr.strip().splitlines()


def _jsonl(stdout: str) -> dict[str, dict]:
    return {Path(r["path"]).name: r for r in map(json.loads, stdout.splitlines())}


# ----------------------------------------------------------------------------- 1, 2: reading


def test_read_image_turns_every_exif_orientation_as_imread_does(tmp_path, closeups):
    image = Image.open(closeups[0]).convert("RGB")
    for orientation in range(1, 9):
        path = tmp_path / f"o{orientation}.jpg"
        exif = Image.Exif()
        exif[0x0112] = orientation
        image.save(path, exif=exif, quality=95)
        assert np.array_equal(read_image(path), cv2.imread(str(path), cv2.IMREAD_COLOR)), orientation


def test_16_bit_images_are_read_by_their_full_scale(tmp_path, closeups):
    bgr = cv2.imread(str(closeups[1]))
    wide = bgr.astype(np.uint16) * 257  # the same picture in 16 bits
    alpha = np.full(bgr.shape[:2], 65535, np.uint16)
    alpha[:10] = 0  # a transparent band on top
    cv2.imwrite(str(tmp_path / "rgba16.png"), np.dstack([wide, alpha]))
    cv2.imwrite(str(tmp_path / "rgb16.png"), wide)
    rgba = read_image(tmp_path / "rgba16.png")
    assert (rgba[:10] == 255).all()  # on white
    assert np.abs(rgba[10:].astype(int) - bgr[10:]).max() <= 1
    assert np.abs(read_image(tmp_path / "rgb16.png").astype(int) - bgr).max() <= 1


def test_classify_and_enroll_read_portrait_and_16_bit_photos_as_shown(tmp_path, closeups, empty_gallery):
    upright, portrait = tmp_path / "upright", tmp_path / "portrait"
    upright.mkdir()
    portrait.mkdir()
    for i, photo in enumerate(closeups):
        Image.open(photo).convert("RGB").save(upright / f"{i:02d}.jpg", quality=95)
        _portrait(photo, portrait / f"{i:02d}.jpg", (6, 8, 3)[i % 3])
    bgr = cv2.imread(str(closeups[2]))
    cv2.imwrite(str(tmp_path / "rgba16.png"), np.dstack([bgr.astype(np.uint16) * 257, np.full(bgr.shape[:2], 65535, np.uint16)]))
    cv2.imwrite(str(tmp_path / "rgb8.png"), bgr)

    out = run_cli("classify", "--json", str(upright), str(portrait), str(tmp_path / "rgba16.png"), str(tmp_path / "rgb8.png"))
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    n = len(closeups)
    for shown, stored in zip(rows[:n], rows[n:2 * n]):
        assert stored["brand"] == shown["brand"] and abs(stored["confidence"] - shown["confidence"]) < 0.05, (shown, stored)
    assert rows[-2]["brand"] == rows[-1]["brand"] and abs(rows[-2]["confidence"] - rows[-1]["confidence"]) < 0.01

    # enroll keys an image by what it shows: the upright copies are the portrait photos already enrolled
    gallery = _gallery_copy(empty_gallery, tmp_path / "g.npz")
    first = run_cli("enroll", "phone-shots", str(portrait), "--gallery", str(gallery), "--json")
    assert first.returncode == 0 and json.loads(first.stdout)["enrolled"] == n, first.stderr
    again = run_cli("enroll", "same-shots", str(upright), "--gallery", str(gallery))
    assert again.returncode == 2 and f"already enrolled {n} (in the gallery as phone-shots {n})" in again.stderr, again.stderr


# ----------------------------------------------------------------------------- 3, 4, 7: one folder, every command


@pytest.fixture()
def mixed(tmp_path, closeups) -> Path:
    """A folder of what users' folders hold: images of several formats, a truncated JPEG, a
    dangling link, a text file and a sub-folder."""
    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    Image.open(closeups[0]).save(folder / "a.jpg")
    Image.open(closeups[1]).convert("RGB").save(folder / "b.GIF")
    Image.open(closeups[2]).save(folder / "c.png")
    data = closeups[3].read_bytes()
    (folder / "d_truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "e_dangling.jpg").symlink_to(tmp_path / "moved_away.jpg")
    (folder / "notes.txt").write_text("not an image")
    Image.open(closeups[4]).save(folder / "sub" / "f.jpg")
    return folder


def test_classify_and_detect_logos_take_the_same_images_of_a_folder(mixed):
    unreadable = [f"stream-pipeline: error: cannot read image {mixed / name}" for name in ("d_truncated.jpg", "e_dangling.jpg")]
    for command in ("classify", "detect-logos"):
        out = run_cli(command, "--json", str(mixed))
        assert out.returncode == 2, out.stderr
        assert sorted(_errors(out.stderr)) == unreadable, out.stderr  # no libjpeg "Premature end of JPEG file"
        assert list(_jsonl(out.stdout)) == ["a.jpg", "b.GIF", "c.png"], out.stdout


def test_enroll_takes_a_folder_as_classify_does_and_keeps_the_gallery_mode(tmp_path, mixed, empty_gallery):
    gallery = _gallery_copy(empty_gallery, tmp_path / "g.npz", 0o640)
    out = run_cli("enroll", "mixed-bag", str(mixed), "--gallery", str(gallery), "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["enrolled"] == 3  # a, b, c: not sub/f.jpg
    assert result["skipped"] == {"unreadable": [str(mixed / "d_truncated.jpg"), str(mixed / "e_dangling.jpg")]}
    assert oct(gallery.stat().st_mode & 0o777) == oct(0o640)


def test_import_brands_reports_a_dangling_link_and_writes_its_report_anywhere(tmp_path, mixed, capsys):
    root = tmp_path / "brands"
    (root / "bmw").mkdir(parents=True)
    for name in ("a.jpg", "c.png", "e_dangling.jpg"):
        (root / "bmw" / name).symlink_to(os.readlink(mixed / name) if name.startswith("e_") else mixed / name)
    report = tmp_path / "new" / "folder" / "r.json"
    assert main(["import-brands", str(root), "--report", str(report), "--min-images", "1"]) == 0
    assert json.loads(report.read_text())["unreadable"] == ["bmw/e_dangling.jpg"]
    capsys.readouterr()
    (tmp_path / "a_file").write_text("")
    for bad in (tmp_path, tmp_path / "a_file" / "r.json"):  # a folder; a file where a folder should be
        assert main(["import-brands", str(root), "--report", str(bad)]) == 2
        err = _errors(capsys.readouterr().err)
        assert len(err) == 1 and err[0].startswith("stream-pipeline: error: ") and str(bad) in err[0], err


# ----------------------------------------------------------------------------- 6, 8, 9: what enroll refuses


def test_blank_images_are_not_enrolled_and_a_failed_enroll_writes_nothing(tmp_path, closeups):
    blanks = tmp_path / "blanks"
    blanks.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(blanks / "grey.png"), np.full((200, 200, 3), 127, np.uint8))
    cv2.imwrite(str(blanks / "near_grey.jpg"), np.clip(127 + rng.normal(0, 1.5, (200, 200, 3)), 0, 255).astype(np.uint8))
    cv2.imwrite(str(blanks / "noise.png"), rng.integers(0, 256, (200, 200, 3), dtype=np.uint8))
    gallery = tmp_path / "new" / "sub" / "g.npz"
    out = run_cli("enroll", "nothing", str(blanks), "--gallery", str(gallery))
    assert out.returncode == 2 and _errors(out.stderr) == [
        "stream-pipeline: error: nothing to enrol for nothing: 3 input(s) skipped (blank 3)"], out.stderr
    assert not (tmp_path / "new").exists()


def test_no_real_badge_photo_is_taken_for_blank(shared):
    from stream_pipeline.brands.gallery_cli import featureless

    photos = sorted((shared / "data" / "logos-closeup").rglob("*.jpg"))
    assert len(photos) >= 500
    assert [p for p in photos if featureless(read_image(p))] == []


def test_enroll_stops_on_a_missing_path_and_says_a_folder_has_no_images(tmp_path, closeups):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no image")
    gallery = tmp_path / "g.npz"
    out = run_cli("enroll", "lancia", str(closeups[0]), str(tmp_path / "typo"), "--gallery", str(gallery))
    assert out.returncode == 2 and _errors(out.stderr) == [
        f"stream-pipeline: error: image not found: {tmp_path / 'typo'}"], out.stderr
    out = run_cli("enroll", "lancia", str(empty), "--gallery", str(gallery))
    assert out.returncode == 2 and len(_errors(out.stderr)) == 1, out.stderr
    assert f"nothing to enrol for lancia: no image files (" in out.stderr and f"in {empty} " in out.stderr
    assert not gallery.exists()


# ----------------------------------------------------------------------------- 7, 10: the gallery file


def test_a_read_only_gallery_is_refused_in_one_line(tmp_path, closeups, empty_gallery):
    gallery = _gallery_copy(empty_gallery, tmp_path / "g.npz", 0o444)
    before = gallery.read_bytes()
    for args in (("enroll", "acura", str(closeups[0])), ("gallery", "remove", "acura")):
        out = run_cli(*args, "--gallery", str(gallery))
        assert out.returncode == 2 and len(_errors(out.stderr)) == 1 and "read-only" in out.stderr, out.stderr
    assert gallery.read_bytes() == before and gallery.stat().st_mode & 0o777 == 0o444


def test_two_enrolls_into_one_gallery_at_once_keep_both_brands(tmp_path, closeups, empty_gallery):
    gallery = _gallery_copy(empty_gallery, tmp_path / "g.npz")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    runs = [subprocess.Popen([sys.executable, "-m", "stream_pipeline", "enroll", brand, *map(str, photos),
                              "--gallery", str(gallery)], cwd=PROJECT_ROOT, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for brand, photos in (("first-fleet", closeups[:4]), ("second-fleet", closeups[4:8]))]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert {row["brand"]: row["references"] for row in Gallery.load(gallery).summary()} == {
        "first-fleet": 4, "second-fleet": 4}


# ----------------------------------------------------------------------------- 11: detect-logos' own messages


def test_detect_logos_names_a_missing_model_and_an_empty_folder_as_the_user_sees_them(tmp_path, monkeypatch, capsys, closeups):
    monkeypatch.chdir(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["detect-logos", str(closeups[0]), "--model", "nope"]) == 4
    assert _errors(capsys.readouterr().err) == [f"stream-pipeline: error: logo detector model not found: {tmp_path / 'nope'}"]
    assert main(["detect-logos", "empty"]) == 2
    err = _errors(capsys.readouterr().err)
    assert len(err) == 1 and "no images given: no image files (" in err[0] and "in empty (sub-folders are not searched)" in err[0]
