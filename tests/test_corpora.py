"""Corpus loaders on tiny trees in each distributor's layout, stray files included.

Every fixture writes a few hundred samples per wav with soundfile, so the whole module runs in
seconds; the real corpora at ../shared/corpora are checked by the `corpus`-marked tests, which
skip with a reason when they are absent.
"""

import hashlib
import json
import math
import pathlib

import numpy as np
import pandas as pd
import pytest
import soundfile

from ser_keras.config import DataConfig
from ser_keras.corpora import COLUMNS, CORPORA, corpus_module, describe, label_order, load_manifest
from ser_keras.corpora import demo
from ser_keras.errors import SerKerasError
from tests.conftest import corpus_dir

SR = 16000


def write_wav(path: pathlib.Path, samples: int = 400, sample_rate: int = SR) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Seeded by the whole path: files with paths of equal length must differ (equal bytes under
    # two paths are a duplicate to a CSV manifest).
    rng = np.random.default_rng(int(hashlib.sha256(str(path).encode()).hexdigest()[:8], 16))
    soundfile.write(str(path), 0.1 * rng.standard_normal(samples).astype(np.float32), sample_rate, subtype="PCM_16")
    return path


def write_text(path: pathlib.Path, text: str = "not audio\n") -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def relative(manifest: pd.DataFrame, root: pathlib.Path) -> list:
    return [pathlib.Path(p).relative_to(root).as_posix() for p in manifest["path"]]


def assert_one_line(exc_info, *needles):
    message = str(exc_info.value)
    assert "\n" not in message
    for needle in needles:
        assert str(needle) in message, (needle, message)


# --- fixture trees -----------------------------------------------------------------------


@pytest.fixture
def casia_root(tmp_path):
    root = tmp_path / "casia"
    for speaker in ("liuchanhg", "ZhaoZuoxiang"):
        write_text(root / speaker / "_desktop.ini", "[.ShellClassInfo]\n")
        for emotion in ("angry", "neutral", "sad"):
            for number in (201, 202):
                write_wav(root / speaker / emotion / f"{number}.wav", samples=320 + number)
                for suffix in (".lab", ".tag", ".peak"):
                    write_text(root / speaker / emotion / f"{number}{suffix}", "0 0.1 sil\n")
            write_text(root / speaker / emotion / "_desktop.ini")
    write_wav(root / "liuchanhg" / "notes" / "201.wav")  # not an emotion folder
    write_text(root / "README.txt")
    return root


@pytest.fixture
def emodb_root(tmp_path):
    root = tmp_path / "emodb"
    for name in ("03a01Fa", "03a01Nc", "08b02Tb", "16a05Wa", "11b10Lc", "13a04Ad", "14a07Eb"):
        write_wav(root / "wav" / f"{name}.wav")
        write_text(root / "lablaut" / f"{name}.lab", "#\n0.1 125 a\n")
    write_wav(root / "wav" / "03a01Xa.wav")  # no such emotion letter
    write_wav(root / "wav" / "take1.wav")
    write_text(root / "erkennung.txt")
    write_text(root / "erklaerung.txt")
    return root


IEMOCAP_SUMMARY = """% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]

[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]
C-E2:\tNeutral;\t()
C-E3:\tNeutral;\t()
A-E3:\tval 3; act 2; dom  2;\t()

[10.0100 - 11.3925]\tSes01F_impro01_M001\texc\t[3.5000, 3.5000, 3.0000]
C-E2:\tExcited;\t()

[14.8872 - 18.0175]\tSes01F_impro01_F002\tfru\t[2.0000, 3.5000, 3.5000]

[19.2900 - 20.7875]\tSes01F_impro01_M003\thap\t[4.0000, 3.0000, 3.0000]

[21.7000 - 23.1000]\tSes01F_impro01_F004\txxx\t[2.5000, 3.0000, 3.0000]

[24.0000 - 25.5000]\tSes01F_impro01_M005\tsur\t[3.0000, 4.0000, 3.0000]
"""


def make_iemocap(root: pathlib.Path) -> pathlib.Path:
    s1 = root / "Session1"
    evaluation = s1 / "dialog" / "EmoEvaluation"
    write_text(evaluation / "Ses01F_impro01.txt", IEMOCAP_SUMMARY)
    # Per-evaluator files of other formats, and a summary-looking line in a subfolder that
    # must not label the otherwise unlabelled utterance F006.
    write_text(evaluation / "Categorical" / "Ses01F_impro01_e2_cat.txt", "Ses01F_impro01_F000 :Neutral state; ()\n")
    write_text(evaluation / "Attribute" / "Ses01F_impro01_e3_atr.txt", "Ses01F_impro01_F000 :val 3; act 2; dom 2; ()\n")
    write_text(evaluation / "Self-evaluation" / "Ses01F_impro01.txt",
               "[1.0 - 2.0]\tSes01F_impro01_F006\tang\t[1.0, 1.0, 1.0]\n")
    (evaluation / "._Ses01F_impro01.txt").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
    write_text(s1 / "dialog" / "transcriptions" / "Ses01F_impro01.txt",
               "Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.\n")
    wavs = s1 / "sentences" / "wav" / "Ses01F_impro01"
    for utterance in ("F000", "M001", "F002", "M003", "F004", "M005", "F006"):
        write_wav(wavs / f"Ses01F_impro01_{utterance}.wav")
    (wavs / "._Ses01F_impro01_F000.wav").write_bytes(b"\x00\x05\x16\x07Mac OS X")
    write_text(s1 / "sentences" / "ForcedAlignment" / "Ses01F_impro01" / "Ses01F_impro01_F000.wdseg")
    write_text(s1 / "dialog" / "wav" / "README.txt")

    s2 = root / "Session2"
    write_text(s2 / "dialog" / "EmoEvaluation" / "Ses02M_script01_1.txt",
               "[1.0 - 2.0]\tSes02M_script01_1_F000\tsad\t[2.0, 2.0, 2.0]\n"
               "[3.0 - 4.0]\tSes02M_script01_1_M001\tang\t[1.5, 4.0, 4.0]\n"
               "[5.0 - 6.0]\tSes02M_script01_1_M002\tneu\t[3.0, 3.0, 3.0]\n")
    for utterance in ("F000", "M001"):  # M002 is labelled but its wav is missing
        write_wav(s2 / "sentences" / "wav" / "Ses02M_script01_1" / f"Ses02M_script01_1_{utterance}.wav")
    write_text(root / "README.txt")
    return root


def make_ravdess(root: pathlib.Path) -> pathlib.Path:
    for name in ("03-01-01-01-01-01-01", "03-01-05-02-01-01-01", "03-01-08-02-02-02-01"):
        write_wav(root / "Actor_01" / f"{name}.wav")
    write_wav(root / "Actor_02" / "03-01-04-01-02-02-02.wav")
    write_wav(root / "Actor_02" / "03-02-03-01-01-01-02.wav")  # song: only with data.ravdess_song
    write_wav(root / "Actor_02" / "01-01-03-01-01-01-02.wav")  # modality 01 (video): not audio-only
    write_wav(root / "Actor_02" / "03-01-09-01-01-01-02.wav")  # no emotion 09
    write_text(root / "Actor_02" / "01-01-03-01-01-01-02.mp4")
    write_text(root / "README.txt")
    return root


def make_tess(root: pathlib.Path) -> pathlib.Path:
    for folder, name in (("OAF_Fear", "OAF_back_fear"), ("OAF_Pleasant_surprise", "OAF_back_ps"),
                         ("OAF_Sad", "OAF_back_sad"), ("OAF_neutral", "OAF_back_neutral"),
                         ("YAF_pleasant_surprised", "YAF_bath_ps"), ("YAF_angry", "YAF_bath_angry"),
                         ("YAF_disgust", "YAF_bath_disgust"), ("YAF_happy", "YAF_bath_happy")):
        write_wav(root / folder / f"{name}.wav")
    write_text(root / "OAF_Fear" / ".DS_Store")
    write_text(root / "OAF_Fear" / "notes.txt")
    # As in the distributed set: not <SPK>_<word>_<emotion>, but its folder says OAF, neutral.
    write_wav(root / "OAF_neutral" / "OA_bite_neutral.wav")
    write_text(root / "README.txt")
    return root


# --- CASIA ---------------------------------------------------------------------------------


def test_casia_reads_layout_and_ignores_annotation_files(casia_root):
    manifest = load_manifest("casia", str(casia_root))
    assert list(manifest.columns) == COLUMNS
    assert len(manifest) == 2 * 3 * 2
    assert relative(manifest, casia_root) == sorted(relative(manifest, casia_root))
    assert sorted(manifest["label"].unique()) == ["angry", "neutral", "sad"]
    assert sorted(manifest["speaker"].unique()) == ["ZhaoZuoxiang", "liuchanhg"]
    genders = dict(zip(manifest["speaker"], manifest["gender"]))
    assert genders == {"liuchanhg": "female", "ZhaoZuoxiang": "male"}
    assert manifest["session"].isna().all()
    first = manifest[manifest["path"].str.endswith("liuchanhg/angry/201.wav")].iloc[0]
    assert first["duration"] == pytest.approx((320 + 201) / SR)


def test_manifest_is_identical_on_every_scan(casia_root):
    pd.testing.assert_frame_equal(load_manifest("casia", str(casia_root)), load_manifest("casia", str(casia_root)))


def test_labels_filter_and_order(casia_root):
    config = DataConfig(corpus="casia", labels=["sad", "angry"])
    manifest = load_manifest("casia", str(casia_root), config)
    assert sorted(manifest["label"].unique()) == ["angry", "sad"]
    assert len(manifest) == 8
    assert label_order(manifest, config) == ["sad", "angry"]
    assert label_order(manifest) == ["angry", "sad"]


def test_unknown_label_is_one_line_error(casia_root):
    with pytest.raises(SerKerasError) as exc_info:
        load_manifest("casia", str(casia_root), DataConfig(corpus="casia", labels=["angry", "bored"]))
    assert_one_line(exc_info, "data.labels", "bored", "casia")


def test_env_var_names_the_data_dir(casia_root, monkeypatch):
    monkeypatch.setenv("SER_KERAS_CASIA", str(casia_root))
    assert len(load_manifest("casia")) == 12
    monkeypatch.delenv("SER_KERAS_CASIA")
    with pytest.raises(SerKerasError) as exc_info:
        load_manifest("casia")
    assert_one_line(exc_info, "SER_KERAS_CASIA", "--data-dir")


def test_relative_data_dir_gives_absolute_paths(casia_root, monkeypatch):
    monkeypatch.chdir(casia_root.parent)
    manifest = load_manifest("casia", casia_root.name)
    assert all(pathlib.Path(p).is_absolute() and pathlib.Path(p).is_file() for p in manifest["path"])


def test_run_config_data_dir_is_used(casia_root):
    from ser_keras.config import Config
    from ser_keras.corpora import run_manifest

    config = Config()
    config.data.corpus, config.runtime.data_dir = "casia", str(casia_root)
    assert len(run_manifest(config)) == 12


def test_unreadable_file_gets_nan_duration(casia_root):
    bad = casia_root / "liuchanhg" / "sad" / "203.wav"
    bad.write_bytes((casia_root / "liuchanhg" / "sad" / "201.wav").read_bytes()[:200])  # truncated copy
    manifest = load_manifest("casia", str(casia_root))
    row = manifest[manifest["path"] == str(bad)].iloc[0]
    assert math.isnan(row["duration"])
    assert describe(manifest)["unreadable_files"] == 1


# --- EMO-DB --------------------------------------------------------------------------------


def test_emodb_parses_file_names(emodb_root):
    manifest = load_manifest("emodb", str(emodb_root))
    assert len(manifest) == 7
    assert set(manifest["label"]) == {"happiness", "neutral", "sadness", "anger", "boredom", "fear", "disgust"}
    row = manifest.iloc[0]
    assert pathlib.Path(row["path"]).name == "03a01Fa.wav"
    assert (row["label"], row["speaker"], row["gender"]) == ("happiness", "03", "male")
    assert dict(zip(manifest["speaker"], manifest["gender"]))["08"] == "female"
    # The wav/ folder itself is accepted too.
    assert len(load_manifest("emodb", str(emodb_root / "wav"))) == 7


# --- IEMOCAP -------------------------------------------------------------------------------


def test_iemocap_four_classes_with_excited_merged(tmp_path):
    root = make_iemocap(tmp_path / "iemocap")
    manifest = load_manifest("iemocap", str(root))
    got = {pathlib.Path(p).stem: (label, speaker, gender, session) for p, label, speaker, gender, session
           in manifest[["path", "label", "speaker", "gender", "session"]].itertuples(index=False)}
    assert got == {
        "Ses01F_impro01_F000": ("neutral", "Ses01F", "female", "Session1"),
        "Ses01F_impro01_M001": ("happy", "Ses01M", "male", "Session1"),
        "Ses01F_impro01_M003": ("happy", "Ses01M", "male", "Session1"),
        "Ses02M_script01_1_F000": ("sad", "Ses02F", "female", "Session2"),
        "Ses02M_script01_1_M001": ("angry", "Ses02M", "male", "Session2"),
    }
    assert describe(manifest)["sessions"] == {"Session1": 3, "Session2": 2}


def test_iemocap_excited_kept_apart(tmp_path):
    root = make_iemocap(tmp_path / "iemocap")
    manifest = load_manifest("iemocap", str(root), DataConfig(corpus="iemocap", iemocap_merge_excited=False))
    labels = dict(zip((pathlib.Path(p).stem for p in manifest["path"]), manifest["label"]))
    assert labels["Ses01F_impro01_M001"] == "excited"
    assert labels["Ses01F_impro01_M003"] == "happy"
    assert sorted(set(labels.values())) == ["angry", "excited", "happy", "neutral", "sad"]


def test_iemocap_root_above_full_release(tmp_path):
    make_iemocap(tmp_path / "download" / "IEMOCAP_full_release")
    assert len(load_manifest("iemocap", str(tmp_path / "download"))) == 5


# --- RAVDESS -------------------------------------------------------------------------------


def test_ravdess_speech_only_by_default(tmp_path):
    root = make_ravdess(tmp_path / "ravdess")
    manifest = load_manifest("ravdess", str(root))
    names = [pathlib.Path(p).name for p in manifest["path"]]
    assert names == ["03-01-01-01-01-01-01.wav", "03-01-05-02-01-01-01.wav", "03-01-08-02-02-02-01.wav",
                     "03-01-04-01-02-02-02.wav"]
    assert list(manifest["label"]) == ["neutral", "angry", "surprised", "sad"]
    assert list(manifest["speaker"]) == ["Actor_01"] * 3 + ["Actor_02"]
    assert list(manifest["gender"]) == ["male"] * 3 + ["female"]


def test_ravdess_song_when_asked(tmp_path):
    root = make_ravdess(tmp_path / "ravdess")
    manifest = load_manifest("ravdess", str(root), DataConfig(corpus="ravdess", ravdess_song=True))
    assert len(manifest) == 5
    assert "03-02-03-01-01-01-02.wav" in {pathlib.Path(p).name for p in manifest["path"]}


def test_ravdess_distributor_folders(tmp_path):
    make_ravdess(tmp_path / "ravdess" / "Audio_Speech_Actors_01-24")
    write_wav(tmp_path / "ravdess" / "Audio_Song_Actors_01-24" / "Actor_03" / "03-02-06-01-01-01-03.wav")
    assert len(load_manifest("ravdess", str(tmp_path / "ravdess"))) == 4
    config = DataConfig(corpus="ravdess", ravdess_song=True)
    assert len(load_manifest("ravdess", str(tmp_path / "ravdess"), config)) == 6


# --- TESS ----------------------------------------------------------------------------------


def test_tess_normalises_emotions(tmp_path):
    root = make_tess(tmp_path / "tess")
    manifest = load_manifest("tess", str(root))
    labels = dict(zip((pathlib.Path(p).stem for p in manifest["path"]), manifest["label"]))
    assert labels == {
        "OAF_back_fear": "fear", "OAF_back_ps": "pleasant_surprise", "OAF_back_sad": "sad",
        "OAF_back_neutral": "neutral", "YAF_bath_ps": "pleasant_surprise", "YAF_bath_angry": "angry",
        "YAF_bath_disgust": "disgust", "YAF_bath_happy": "happy", "OA_bite_neutral": "neutral",
    }
    assert set(manifest["speaker"]) == {"OAF", "YAF"}
    assert set(manifest["gender"]) == {"female"}


def test_tess_root_one_level_up(tmp_path):
    make_tess(tmp_path / "tess" / "TESS Toronto emotional speech set data")
    assert len(load_manifest("tess", str(tmp_path / "tess"))) == 9


def test_info_counts_and_names_a_misnamed_tess_file(tmp_path, capsys):
    """TESS ships OAF_neutral/OA_bite_neutral.wav; it is used (the folder is unambiguous) and named."""
    from ser_keras.cli import main

    root = make_tess(tmp_path / "tess")
    manifest = load_manifest("tess", str(root))
    row = manifest[manifest["path"].str.endswith("OA_bite_neutral.wav")]
    assert row[["label", "speaker"]].values.tolist() == [["neutral", "OAF"]]
    assert main(["info", "--corpus", "tess", "--data-dir", str(root)]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "not matching" in line]
    assert len(lines) == 1 and "1 file not matching" in lines[0] and "(1 used, 0 skipped)" in lines[0], out
    assert str(root / "OAF_neutral" / "OA_bite_neutral.wav") in lines[0]
    assert "utterances  9" in out
    # A file the folders cannot label is skipped, and counted and named as well.
    write_wav(root / "OAF_misc" / "OAF_word_misc.wav")
    assert main(["info", "--corpus", "tess", "--data-dir", str(root), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["utterances"] == 9
    assert [(pathlib.Path(r["path"]).name, r["used"]) for r in summary["unmatched_files"]] == [
        ("OAF_word_misc.wav", False), ("OA_bite_neutral.wav", True)]


@pytest.mark.parametrize("name, expected", [
    ("casia", {"201.wav"}),  # liuchanhg/notes/201.wav: not an emotion folder
    ("emodb", {"03a01Xa.wav", "take1.wav"}),
    ("ravdess", {"01-01-03-01-01-01-02.wav", "03-01-09-01-01-01-02.wav"}),  # video modality, no emotion 09
])
def test_loaders_count_and_name_the_files_they_leave_out(name, expected, tmp_path, request):
    from ser_keras.corpora import unmatched_line

    if name == "ravdess":
        root = make_ravdess(tmp_path / "ravdess")
    else:
        root = request.getfixturevalue(f"{name}_root")
    manifest = load_manifest(name, str(root))
    unmatched = manifest.attrs["unmatched"]
    assert {pathlib.Path(r["path"]).name for r in unmatched} == expected and not any(r["used"] for r in unmatched)
    line = unmatched_line(manifest)
    assert "\n" not in line and line.startswith(f"{len(expected)} file{'s' * (len(expected) > 1)} not matching ")
    assert all(name in line for name in expected)
    assert not set(pathlib.Path(p).name for p in manifest["path"]) & (expected - {"201.wav"})


# --- CSV manifest --------------------------------------------------------------------------


@pytest.fixture
def csv_root(tmp_path):
    root = tmp_path / "mine"
    write_wav(root / "audio" / "a.wav")
    write_wav(root / "audio" / "b.wav")
    absolute = write_wav(tmp_path / "elsewhere" / "c.wav")
    write_text(root / "manifest.csv",
               "path,label,speaker,gender,notes\n"
               "audio/a.wav,joy,s1,female,first\n"
               "audio/b.wav,anger,s2,,\n"
               "\n"
               f"{absolute},joy,s2,male,absolute path\n")
    return root


def test_csv_from_directory_and_file(csv_root):
    by_dir = load_manifest("csv", str(csv_root))
    by_file = load_manifest("csv", str(csv_root / "manifest.csv"))
    pd.testing.assert_frame_equal(by_dir, by_file)
    assert len(by_dir) == 3
    rows = {pathlib.Path(p).name: (label, speaker, None if pd.isna(gender) else gender) for p, label, speaker, gender
            in by_dir[["path", "label", "speaker", "gender"]].itertuples(index=False)}
    assert rows == {"a.wav": ("joy", "s1", "female"), "b.wav": ("anger", "s2", None), "c.wav": ("joy", "s2", "male")}
    assert by_dir["session"].isna().all()
    assert all(pathlib.Path(p).is_absolute() for p in by_dir["path"])


def test_csv_missing_column(tmp_path):
    csv_file = write_text(tmp_path / "list.csv", "file,label,speaker\nx.wav,joy,s1\n")
    with pytest.raises(SerKerasError) as exc_info:
        load_manifest("csv", str(csv_file))
    assert_one_line(exc_info, csv_file, "path")


def test_csv_missing_audio_file_names_the_line(csv_root):
    (csv_root / "audio" / "b.wav").unlink()
    with pytest.raises(SerKerasError) as exc_info:
        load_manifest("csv", str(csv_root))
    assert_one_line(exc_info, csv_root / "manifest.csv", "line 3", "b.wav", "not found")


def test_csv_empty_cell_names_the_line(csv_root):
    write_text(csv_root / "manifest.csv", "path,label,speaker\naudio/a.wav,joy,s1\naudio/b.wav,,s2\n")
    with pytest.raises(SerKerasError) as exc_info:
        load_manifest("csv", str(csv_root))
    assert_one_line(exc_info, "manifest.csv", "line 3", "label")


def test_fit_refuses_a_manifest_listing_one_file_twice(csv_root, tmp_path, capsys):
    """Refused, not dropped (see corpora/csv_manifest.py): both lines named, nothing trained."""
    from ser_keras.cli import main

    manifest = csv_root / "manifest.csv"
    write_text(manifest, "path,label,speaker\naudio/a.wav,joy,s1\naudio/b.wav,anger,s2\n"
                         "./audio/../audio/a.wav,joy,s3\n")
    run_dir = tmp_path / "run"
    assert main(["fit", "--corpus", "csv", "--data-dir", str(manifest), "--experiment", "exp1",
                 "--run-dir", str(run_dir), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{manifest} lines 2 and 4: the same audio file listed twice" in err, err
    assert not run_dir.exists()


def test_csv_same_audio_under_two_paths_is_refused(csv_root):
    (csv_root / "audio" / "copy.wav").write_bytes((csv_root / "audio" / "b.wav").read_bytes())
    write_text(csv_root / "manifest.csv",
               "path,label,speaker\naudio/b.wav,anger,s2\naudio/a.wav,joy,s1\naudio/copy.wav,anger,s3\n")
    with pytest.raises(SerKerasError) as exc_info:
        load_manifest("csv", str(csv_root))
    assert_one_line(exc_info, csv_root / "manifest.csv", "lines 2 and 4", "same audio content", "b.wav", "copy.wav")


def test_csv_folder_without_manifest(tmp_path):
    write_wav(tmp_path / "corpus" / "a.wav")
    with pytest.raises(SerKerasError) as exc_info:
        load_manifest("csv", str(tmp_path / "corpus"))
    assert_one_line(exc_info, tmp_path / "corpus", "manifest.csv")


def test_csv_missing_file(tmp_path):
    with pytest.raises(SerKerasError) as exc_info:
        load_manifest("csv", str(tmp_path / "nope.csv"))
    assert_one_line(exc_info, tmp_path / "nope.csv", "not found")


# --- errors shared by every loader -----------------------------------------------------------

REAL_LAYOUT_LOADERS = ["casia", "emodb", "iemocap", "ravdess", "tess"]


@pytest.mark.parametrize("name", REAL_LAYOUT_LOADERS)
def test_nothing_matches_is_one_line_error(name, tmp_path):
    root = tmp_path / name
    write_text(root / "README.txt")
    write_wav(root / "stray.wav")
    write_text(root / "notes" / "x.txt")
    with pytest.raises(SerKerasError) as exc_info:
        load_manifest(name, str(root))
    assert_one_line(exc_info, root, f"no {name} utterances", corpus_module(name).LAYOUT, "README.txt")


@pytest.mark.parametrize("name", REAL_LAYOUT_LOADERS + ["csv"])
def test_missing_directory(name, tmp_path):
    with pytest.raises(SerKerasError) as exc_info:
        load_manifest(name, str(tmp_path / "absent"))
    assert_one_line(exc_info, tmp_path / "absent", "not found")


def test_data_dir_that_is_a_file(tmp_path):
    with pytest.raises(SerKerasError) as exc_info:
        load_manifest("casia", str(write_text(tmp_path / "casia.zip")))
    assert_one_line(exc_info, "casia.zip", "not a directory")


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_every_loader_has_the_contract(name):
    module = corpus_module(name)
    assert module.NAME == name
    assert module.ENV_VAR == f"SER_KERAS_{name.upper()}"
    assert module.LAYOUT and "\n" not in module.LAYOUT
    assert callable(module.scan)


def test_unknown_corpus():
    with pytest.raises(SerKerasError) as exc_info:
        load_manifest("timit")
    assert_one_line(exc_info, "timit", "casia")


@pytest.mark.parametrize("name, make", [("iemocap", make_iemocap), ("ravdess", make_ravdess), ("tess", make_tess)])
def test_env_var_for_each_corpus(name, make, tmp_path, monkeypatch):
    root = make(tmp_path / name)
    monkeypatch.setenv(f"SER_KERAS_{name.upper()}", str(root))
    assert len(load_manifest(name)) > 0


# --- demo ----------------------------------------------------------------------------------


def _digest(root: pathlib.Path) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.wav"))}


@pytest.fixture(scope="module")
def demo_manifest():
    """The demo corpus in the session cache (conftest points SER_KERAS_CACHE at a temp dir)."""
    return load_manifest("demo")


def test_demo_corpus_statistics(demo_manifest, session_cache):
    m = demo_manifest
    n_speakers, n_emotions = len(demo.SPEAKERS), len(demo.EMOTIONS)
    assert len(m) == n_speakers * n_emotions * demo.UTTERANCES_PER_CLASS
    assert m["speaker"].nunique() == n_speakers >= 4
    assert m.groupby("label").size().to_dict() == {e.name: n_speakers * demo.UTTERANCES_PER_CLASS
                                                   for e in demo.EMOTIONS}
    assert {"neutral", "happy", "sad", "angry"} <= set(m["label"])
    assert m.groupby("gender")["speaker"].nunique().to_dict() == {"female": 2, "male": 2}
    low, high = demo.DURATION_RANGE_S
    assert m["duration"].between(low - 0.01, high + 0.01).all()
    root = session_cache / f"demo-v{demo.GENERATOR_VERSION}-seed0"
    assert all(pathlib.Path(p).is_relative_to(root) for p in m["path"])
    info = soundfile.info(m["path"].iloc[0])
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")


def test_demo_is_deterministic_and_generated_once(demo_manifest, tmp_path):
    target = tmp_path / "demo_here"
    manifest = load_manifest("demo", str(target))  # --data-dir: generated there
    cached_root = pathlib.Path(demo_manifest["path"].iloc[0]).parents[2]
    assert _digest(target) == _digest(cached_root)
    assert relative(manifest, target) == relative(demo_manifest, cached_root)
    assert list(manifest["label"]) == list(demo_manifest["label"])
    stamp = {p: p.stat().st_mtime_ns for p in target.rglob("*.wav")}
    load_manifest("demo", str(target))
    assert {p: p.stat().st_mtime_ns for p in target.rglob("*.wav")} == stamp
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_demo_utterances_differ_by_seed_and_emotion():
    speaker, (neutral, angry) = demo.SPEAKERS[0], (demo.EMOTIONS[0], demo.EMOTIONS[3])
    style = demo._speaker_style(0, 0, 0)
    a = demo.synthesize(np.random.default_rng([0, 0, 0, 0, 1]), speaker, neutral, style)
    b = demo.synthesize(np.random.default_rng([0, 0, 0, 0, 1]), speaker, neutral, style)
    c = demo.synthesize(np.random.default_rng([1, 0, 0, 0, 1]), speaker, neutral, style)
    np.testing.assert_array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)
    assert a.dtype == np.float32 and np.max(np.abs(a)) <= 0.95

    # Angry is louder than neutral for the same speaker, on average.
    def rms(emotion, index):
        x = demo.synthesize(np.random.default_rng([0, 0, index, 0, 1]), speaker, emotion,
                            demo._speaker_style(0, 0, index))
        return np.sqrt(np.mean(x ** 2))
    assert rms(angry, 3) > rms(neutral, 0)


def _fake_generate(out_dir, seed=0):
    write_wav(out_dir / "spk_f1" / "neutral" / f"spk_f1_neutral_{seed:02d}.wav")
    return []


def test_demo_cache_folder_names_version_and_seed(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "generate", _fake_generate)
    manifest = load_manifest("demo", config=DataConfig(demo_seed=7), cache_dir=str(tmp_path))
    folder = tmp_path / f"demo-v{demo.GENERATOR_VERSION}-seed7"
    assert pathlib.Path(manifest["path"].iloc[0]).parents[2] == folder
    assert json.loads((folder / demo.MARKER).read_text())["seed"] == 7


def test_demo_replaces_another_seed_but_never_foreign_files(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "generate", _fake_generate)
    target = tmp_path / "demo"
    load_manifest("demo", str(target), DataConfig(demo_seed=1))
    assert (target / "spk_f1" / "neutral" / "spk_f1_neutral_01.wav").is_file()
    load_manifest("demo", str(target), DataConfig(demo_seed=2))  # stale seed: regenerated
    assert [p.name for p in target.rglob("*.wav")] == ["spk_f1_neutral_02.wav"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]

    foreign = tmp_path / "my_corpus"
    write_text(foreign / "thesis.txt")
    with pytest.raises(SerKerasError) as exc_info:
        load_manifest("demo", str(foreign))
    assert_one_line(exc_info, foreign, "not empty")
    assert (foreign / "thesis.txt").is_file()


def test_demo_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    def broken(out_dir, seed=0):
        _fake_generate(out_dir, seed)
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "generate", broken)
    with pytest.raises(KeyboardInterrupt):
        load_manifest("demo", str(tmp_path / "demo"))
    assert list(tmp_path.iterdir()) == []


def _mfcc_mean(waveform: np.ndarray, n_mfcc: int = 13) -> np.ndarray:
    """Mean of 13 MFCCs (25 ms Hann frames, 10 ms hop, 40 mel bands), in plain numpy."""
    import librosa
    from scipy.fft import dct

    frame, hop = 400, 160
    waveform = np.pad(waveform, (0, max(frame - len(waveform), 0)))
    frames = np.lib.stride_tricks.sliding_window_view(waveform, frame)[::hop] * np.hanning(frame)
    power = np.abs(np.fft.rfft(frames, n=512)) ** 2
    mel = np.log(power @ librosa.filters.mel(sr=SR, n_fft=512, n_mels=40).T + 1e-10)
    return dct(mel, type=2, norm="ortho", axis=1)[:, :n_mfcc].mean(axis=0)


def test_demo_is_learnable_but_not_trivial(demo_manifest):
    """MFCC means + logistic regression: clearly above chance (25 %), clearly below 100 %.

    Under leave-one-speaker-out (no speaker normalisation) and a stratified 5-fold random split.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import LeaveOneGroupOut, StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ser_keras.audio import load_audio

    features = np.stack([_mfcc_mean(load_audio(p)) for p in demo_manifest["path"]])
    labels, speakers = demo_manifest["label"].to_numpy(), demo_manifest["speaker"].to_numpy()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    loso = np.mean(cross_val_predict(model, features, labels, groups=speakers, cv=LeaveOneGroupOut()) == labels)
    split = StratifiedKFold(5, shuffle=True, random_state=0)
    random_split = np.mean(cross_val_predict(model, features, labels, cv=split) == labels)
    assert 0.38 < loso < 0.9, loso
    assert 0.45 < random_split < 0.95, random_split


# --- real corpora ----------------------------------------------------------------------------


@pytest.mark.corpus
def test_real_casia():
    manifest = load_manifest("casia", str(corpus_dir("casia")))
    assert len(manifest) == 1200
    assert manifest["speaker"].nunique() == 4
    assert manifest.groupby("label").size().to_dict() == {
        e: 200 for e in ("angry", "fear", "happy", "neutral", "sad", "surprise")
    }
    assert manifest["gender"].value_counts().to_dict() == {"female": 600, "male": 600}
    assert not manifest["duration"].isna().any()


@pytest.mark.corpus
def test_real_emodb():
    manifest = load_manifest("emodb", str(corpus_dir("emodb")))
    assert len(manifest) == 535
    assert manifest["speaker"].nunique() == 10
    assert set(manifest["label"]) == {"anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral"}
    assert not manifest["gender"].isna().any()
    # The loader takes any length (the distributor's EMO-DB runs from about 1.2 to 9 s): only
    # that every header was read is a loader property.
    assert (manifest["duration"] > 0).all()


@pytest.mark.corpus
def test_the_shared_emodb_copy_is_the_two_second_one():
    """Not a loader requirement: a check that ../shared/corpora/emodb is the modified copy the
    README's EMO-DB figures were measured on (resampled, cropped or padded to exactly 2.0 s)."""
    manifest = load_manifest("emodb", str(corpus_dir("emodb")))
    assert manifest["duration"].round(3).eq(2.0).all()
