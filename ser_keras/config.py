"""Typed configuration: dataclasses hold the schema and defaults, YAML overrides them.

Resolution order (later wins):

1. the dataclass defaults below;
2. the experiment YAML (``experiments/exp4.yaml``, or any ``--config FILE``), top level;
3. that file's ``corpora: {<corpus>: {...}}`` block for the corpus being run;
4. ``--set section.key=value`` from the command line.

Unknown keys are errors that name the key and the file, so a typo never silently
falls back to a default.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import pathlib
import typing
from dataclasses import dataclass, field

import yaml

from ser_keras import __version__
from ser_keras.errors import SerKerasError

# The experiment `fit` runs when none is named.
DEFAULT_EXPERIMENT = "exp5"
# The allowed values of every choice field, one tuple each: `Config.validate()`, the modules that
# implement the choices and the CLI's `choices=` all read them from here.
CLASSIFIERS = ("network", "svm")
INPUT_FEATURES = ("spectrogram", "lld", "functionals")
FRONTENDS = ("sae_conv", "dense")
NORMALIZATIONS = ("neutral_speaker", "neutral_global", "none", "speaker")
SPEAKER_FALLBACKS = ("speaker_all", "global")
WARP_MODES = ("draw", "copies")
PROTOCOLS = ("loso", "session", "random", "all")
VALIDATION_SPLITS = ("auto", "speakers", "utterances")
OPTIMIZERS = ("adam", "sgd")
CLASS_WEIGHTS = ("none", "balanced")
STRATEGIES = ("default", "mirrored", "multi-worker")
# What the model fields were before they existed: a run directory written by an older version
# names only its experiment, and these fill in what that name meant then.
_LEGACY_MODEL_FIELDS = {
    "exp1": {"classifier": "svm", "input_features": "functionals"},
    "exp2": {"classifier": "network", "input_features": "lld", "frontend": "dense"},
    "exp3": {"classifier": "network", "input_features": "spectrogram", "frontend": "sae_conv"},
    "exp4": {"classifier": "network", "input_features": "spectrogram", "frontend": "sae_conv"},
}
# Where the runtime settings were before the `runtime` section existed: run directories written
# by an older version (and YAML files or --set overrides written for it) keep them there.
_LEGACY_RUNTIME_KEYS = {
    ("data", "data_dir"): "data_dir",
    ("data", "cache_dir"): "cache_dir",
    ("features", "n_jobs"): "extract_jobs",
    ("model", "svm_n_jobs"): "svm_jobs",
    ("train", "fold"): "fold",
    ("train", "strategy"): "strategy",
    ("train", "jobs"): "jobs",
    ("train", "sweep_block_windows"): "sweep_block_windows",
}


@dataclass
class DataConfig:
    """Which corpus, where, and how its labels are read."""

    corpus: str = "demo"
    sample_rate: int = 16000
    # Restrict to (and order by) these labels; None keeps every label the corpus has.
    labels: typing.Optional[typing.List[str]] = None
    neutral_label: str = "neutral"
    # IEMOCAP: the usual 4-class set merges excited into happy.
    iemocap_merge_excited: bool = True
    # RAVDESS: also read the sung files (vocal channel 02); the default is speech only.
    ravdess_song: bool = False
    # demo: seed of the synthetic corpus (another seed generates another corpus).
    demo_seed: int = 0


@dataclass
class FeatureConfig:
    """The front end of section 4.1 of the paper."""

    frame_ms: float = 20.0
    hop_ms: float = 10.0
    # 20 ms at 16 kHz is 320 samples, more than the paper's "256-point FFT" can hold, so the
    # frame is zero-padded to a 512-point FFT and the lowest 256 bins (0 .. 7.97 kHz) are kept:
    # 256 dimensions, as in the paper, without truncating the window.
    n_fft: int = 512
    n_bins: int = 256
    log_floor: float = 1e-10
    pca_components: int = 60
    # speaker | neutral_speaker | neutral_global | none (see features/normalize.py). "speaker"
    # normalises every speaker, training and test alike, by all of their own speech; the
    # paper's neutral-speech statistics need a test speaker's labels under LOSO (README, "Where
    # this differs from the paper").
    normalization: str = "speaker"
    # For a speaker with no neutral speech in the training fold (every test speaker under
    # LOSO): "speaker_all" uses all of that speaker's utterances (no labels), "global"
    # uses the training fold's pooled neutral statistics.
    speaker_fallback: str = "speaker_all"
    n_mfcc: int = 13
    lld_deltas: bool = False
    # LPC order for the formants (features/llds.py). 12 at 16 kHz spreads too few poles over
    # 0..8 kHz and misses F1/F2 in real speech; the usual rule 2 + sr/1000 gives 18.
    lpc_order: int = 18
    f0_min_hz: float = 60.0
    f0_max_hz: float = 500.0
    # YIN dip threshold for F0 and the voicing flag (cumulative-mean-normalised difference).
    voicing_threshold: float = 0.3
    # Pre-emphasis coefficient before LPC formant analysis (0 disables it).
    pre_emphasis: float = 0.97
    # Mel bands behind the MFCCs (Slaney filterbank on the n_fft power spectrum).
    n_mels: int = 26
    # Normalisation: standard deviations are floored at this value (features/normalize.py).
    norm_std_floor: float = 1e-3
    # PCA is fitted on at most this many training frames (a seeded subsample beyond it).
    pca_max_frames: int = 200000
    # Utterances longer than this are cropped (centre) for training; None keeps all frames.
    max_frames: typing.Optional[int] = 800
    # exp3/exp4 training augmentation (features/augment.py): one warped version of every
    # training utterance per factor, its spectrogram's frequency axis scaled by the factor
    # (VTLP-style), each normalised as a speaker of its own. [] (default) adds none; exp1/exp2
    # (LLD features) ignore it. experiments/exp4.yaml sets [0.9, 1.1].
    warp_factors: typing.List[float] = field(default_factory=list)
    # How the versions are used: "draw" shows each utterance once per epoch, as itself or one
    # of its warped versions drawn at random (no extra steps per epoch); "copies" trains on
    # every version every epoch (each factor adds a training set's worth of steps).
    warp_mode: str = "draw"
    # Speaker-normalised models: also train on every training utterance normalised as a single
    # served recording is (the pooled training statistics, no speaker context), as one more
    # version beside the warped ones (drawn or copied per warp_mode), so the served model has
    # seen its input in training.
    pooled_version: bool = False
    # Level (gain) normalisation (features/level.py): subtract from every log-spectrogram bin a
    # per-utterance reference (the mean log power of the loudest fifth of the frames) before
    # any other normalisation and the PCA, in training and serving, so a recording's gain does
    # not change its features except in the cells it pushes to the log floor (features/level.py).
    # Spectrogram models only (exp1/exp2 read LLDs and ignore it). False keeps the features of
    # runs made before it existed.
    level_normalization: bool = False
    # Speech detection (features/level.py), for the serving `speech` output and predict's
    # "speech": a recording without speech gets uniform probabilities. These do not change
    # training. The quietest real recording measured here (the demo corpus' quietest file,
    # loudest-fifth RMS -35 dBFS; EMO-DB -26, CASIA -32) played at gain 0.05, the lowest gain
    # serving must handle, is at -61 dBFS, so the level threshold sits below that; 16-bit
    # silence with dither is near -100. Steady noise at any level is rejected by the contrast
    # between the loudest and the quietest fifth of the frames: white noise shows 1.0 dB
    # (at most 1.4 over 200 draws of 0.1 to 10 s), real recordings at least 12.7 dB (EMO-DB;
    # CASIA 14.0, demo 27.2). 3 dB stays clear of steady noise and leaves room for speech over
    # background noise, which lowers the contrast.
    speech_threshold_dbfs: float = -70.0
    speech_min_contrast_db: float = 3.0
    # Shorter recordings hold no speech: nothing shorter than a syllable carries an emotion.
    speech_min_ms: float = 100.0


@dataclass
class SAEConfig:
    """Sparse auto-encoder pre-training of the convolution kernels (eq. 1-3)."""

    kernel_sizes: typing.List[int] = field(default_factory=lambda: [3, 6, 10])
    hidden_units: int = 60
    sparsity: float = 0.05  # rho
    sparsity_weight: float = 3.0  # mu
    weight_decay: float = 1e-4
    epochs: int = 15
    batch_size: int = 256
    # Adam; 3e-3 reaches the plateau within 15 epochs on 20k CASIA patches (1e-3 does not).
    learning_rate: float = 3e-3
    patches_per_size: int = 20000
    # The paper trains the kernels on patches from a random third of the training set.
    subset_fraction: float = 0.3333
    # A sigmoid decoder needs targets in (0, 1): per feature dimension, mean +-`clip_std`
    # standard deviations of the patches map onto [0.1, 0.9], beyond is clipped (UFLDL
    # style). The encoder sees standardised patches; that affine is folded exactly into the
    # returned kernels, so they apply to the unscaled features (training/sae_pretrain.py).
    clip_std: float = 3.0


@dataclass
class ModelConfig:
    """What the model is. The experiment YAMLs set these fields; the code branches on them,
    never on the experiment's name (which only names the run)."""

    # The run's name (and the experiment YAML that set it). The defaults below are the paper's
    # exp4 shape; DEFAULT_EXPERIMENT is which YAML `fit` loads when none is named.
    experiment: str = "exp4"
    # "network" (a Keras model, exp2-exp5) or "svm" (the exp1 baseline, scikit-learn).
    classifier: str = "network"
    # What the model reads: "spectrogram" (log spectrogram -> normalisation -> PCA),
    # "lld" (frame LLDs: F0, formants, energy, ZCR, MFCC) or "functionals" (their
    # utterance statistics, for the SVM).
    input_features: str = "spectrogram"
    # The network's first stage: "sae_conv" (SAE-learned kernels + block pooling, exp3-5) or
    # "dense" (a ReLU layer on every frame, exp2).
    frontend: str = "sae_conv"
    dense_units: int = 512  # exp2
    lstm_units: int = 30
    lstm_layers: int = 2
    bidirectional: bool = True
    attention: bool = True
    # Block pooling after the SAE convolution (eq. 5-6): mean over windows of
    # `pool_window` frames, then mean and variance over blocks of `block_windows` windows,
    # one block every `block_stride` windows.
    pool_window: int = 3
    block_windows: int = 10
    block_stride: int = 5
    fine_tune_kernels: bool = False
    # Units of a dense layer on utterance statistics of the input frames (mean, std and
    # frame-to-frame dynamics per channel, layers/statistics_pooling.py), fused with the pooled
    # sequence before the classifier; 0 (the paper's models) has no such branch.
    statistics_units: int = 0
    dropout: float = 0.5
    input_noise: float = 0.1
    init_scale: float = 0.1
    # exp1: StandardScaler + RBF SVM, C (and gamma) searched by GridSearchCV. The paper's grid
    # is C on a log grid 1e-6..1 (`--set model.svm_c_grid=[1e-6,1e-5,1e-4,1e-3,1e-2,1e-1,1]`);
    # the default extends it upwards because with standardised functionals the best C is
    # usually >= 1.
    svm_c_grid: typing.List[float] = field(
        default_factory=lambda: [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0]
    )
    # gamma values for the RBF kernel: "scale" (1 / (n_features * var)) and/or numbers.
    svm_gamma_grid: typing.List[typing.Union[str, float]] = field(default_factory=lambda: ["scale"])
    svm_cv_folds: int = 5  # stratified, shuffled with train.seed
    svm_scoring: str = "accuracy"  # any sklearn scorer name, e.g. balanced_accuracy (= UA)


@dataclass
class TrainConfig:
    """Optimisation, protocol and seeds."""

    seed: int = 0
    # loso | session | random; "all": one fold training on every utterance (the model to
    # deploy; refit on everything after early stopping, no test part, no WA/UA)
    protocol: str = "loso"
    folds: int = 10  # for protocol=random
    # Validation for early stopping, from a fold's training part only (data/splits.py):
    # "auto" holds out whole training speakers under loso/session (speaker-independent, like
    # the test) when at least 3 remain to train on, else (and under random) a stratified
    # sample of training utterances (data/splits.py).
    validation_split: str = "auto"  # auto | speakers | utterances
    # Share of the training speakers (or utterances) held out: 2 of 9 EMO-DB speakers per fold.
    validation_fraction: float = 0.2
    # exp2-4: after early stopping, train a fresh model on the WHOLE training part (the
    # validation speakers too) for the number of epochs validation picked, and test that one
    # (folds/<fold>/refit/). More training speakers, about twice the training time. exp1's
    # SVM always refits on training + validation.
    refit: bool = False
    optimizer: str = "adam"  # adam | sgd
    learning_rate: float = 1e-3
    momentum: float = 0.9
    batch_size: int = 10  # the paper updates every 10 sequences
    epochs: int = 40
    patience: int = 8
    # "balanced" weights each class by n / (n_classes * n_class) in the loss, which lifts UA on
    # imbalanced corpora (EMO-DB); "none" is the paper's plain cross-entropy.
    class_weight: str = "none"  # none | balanced


@dataclass
class RuntimeConfig:
    """Where and how a run executes, and which part of it: nothing here changes what a fold
    learns, so resuming a run (and its config hash, and `fit --estimate-from`) compares every
    other section and never this one (training/resume.py)."""

    # The corpus directory (--data-dir); None -> the corpus' environment variable.
    data_dir: typing.Optional[str] = None
    # Where features (and the generated demo corpus) are cached; None -> $SER_KERAS_CACHE,
    # else ~/.cache/ser_keras.
    cache_dir: typing.Optional[str] = None
    strategy: str = "default"  # default | mirrored | multi-worker
    # Folds trained at once, each in its own process (training/parallel.py); with more than
    # one, each process gets cpu_count // jobs TensorFlow threads. A fold's numbers depend on
    # its thread count (floating-point summation order), so they differ in the last digits
    # between jobs=1 and jobs>1; the same config and jobs on the same machine repeat exactly.
    jobs: int = 1
    fold: typing.Optional[int] = None  # run one fold only (0-based)
    # Worker processes for feature extraction; 0 means one per CPU core.
    extract_jobs: int = 0
    # Processes of the exp1 SVM's grid search (scikit-learn n_jobs).
    svm_jobs: int = 1
    # `reproduce`: values of model.block_windows for the UAR-vs-context-frames sweep
    # (context frames per block = model.pool_window * block_windows); each run of the sweep
    # records its own model.block_windows.
    sweep_block_windows: typing.List[int] = field(default_factory=lambda: [2, 5, 10, 20])


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    sae: SAEConfig = field(default_factory=SAEConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Every check of the config's values, before anything runs (one line naming the key
        and the value on the first failure)."""
        _validate(self)


def cache_root(cache_dir: typing.Optional[str] = None) -> pathlib.Path:
    """Where features and the generated demo corpus live: `cache_dir` (runtime.cache_dir),
    else $SER_KERAS_CACHE, else ~/.cache/ser_keras."""
    import os

    chosen = cache_dir or os.environ.get("SER_KERAS_CACHE") or "~/.cache/ser_keras"
    return pathlib.Path(chosen).expanduser()


def experiments_dir() -> pathlib.Path:
    """The shipped experiment YAMLs: inside an installed package, else the source tree."""
    packaged = pathlib.Path(str(importlib.resources.files("ser_keras"))) / "experiments"
    if packaged.is_dir():
        return packaged
    return pathlib.Path(__file__).resolve().parent.parent / "experiments"


def _apply(obj, values: dict, source: str, prefix: str = "") -> None:
    """Override dataclass `obj` in place from a nested dict, rejecting unknown keys."""
    known = {f.name: f for f in dataclasses.fields(obj)}
    hints = typing.get_type_hints(type(obj))
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in known:
            raise SerKerasError(f"{source}: unknown config key '{dotted}'")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise SerKerasError(f"{source}: '{dotted}' must be a mapping, got {value!r}")
            _apply(current, value, source, prefix=dotted + ".")
        else:
            setattr(obj, key, _coerce(value, hints[key], dotted, source))


def _coerce(value, hint, dotted: str, source: str):
    """Check/convert a YAML or --set value against the field's type hint."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union and type(None) in args:
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    try:
        if origin in (list, typing.List):
            if not isinstance(value, (list, tuple)):
                value = [value]
            return [_coerce(v, args[0], dotted, source) for v in value]
        if hint is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "yes", "1", "on"):
                    return True
                if value.lower() in ("false", "no", "0", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
    except (TypeError, ValueError):
        raise SerKerasError(
            f"{source}: '{dotted}' expects {getattr(hint, '__name__', hint)}, got {value!r}"
        ) from None
    return value


def parse_override(text: str) -> tuple:
    """'train.epochs=5' -> (['train', 'epochs'], 5), the value parsed as YAML."""
    if "=" not in text:
        raise SerKerasError(f"--set {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def _nest(path: list, value) -> dict:
    out = value
    for part in reversed(path):
        out = {part: out}
    return out


def load_yaml(path: pathlib.Path) -> dict:
    if not path.is_file():
        raise SerKerasError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SerKerasError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise SerKerasError(f"{path}: top level must be a mapping")
    return data


def experiment_names() -> list:
    """The shipped experiments: the YAML files in `experiments_dir()` that name their experiment
    (`model.experiment`). A file that names none (`base.yaml`) only holds what others extend."""
    names = []
    for path in sorted(experiments_dir().glob("*.yaml")):
        model = load_yaml(path).get("model")
        if isinstance(model, dict) and model.get("experiment"):
            names.append(path.stem)
    return names


def resolve_config_path(experiment: typing.Optional[str], config_file: typing.Optional[str]) -> pathlib.Path:
    if config_file:
        return pathlib.Path(config_file)
    experiment = experiment or DEFAULT_EXPERIMENT
    names = experiment_names()
    if experiment not in names:
        raise SerKerasError(f"unknown experiment '{experiment}': choose one of {', '.join(names)}")
    return experiments_dir() / f"{experiment}.yaml"


def _merge(base: dict, override: dict) -> dict:
    """`override` on top of `base`, mappings merged key by key."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_experiment_yaml(path: pathlib.Path, seen: typing.Tuple[pathlib.Path, ...] = ()) -> dict:
    """An experiment YAML with its `extends: <file>` chain resolved (relative to the file)."""
    path = pathlib.Path(path)
    if path.resolve() in seen:
        raise SerKerasError(f"{path}: 'extends' loops back to itself")
    data = load_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise SerKerasError(f"{path}: 'extends' must name a YAML file, got {parent!r}")
    return _merge(load_experiment_yaml(path.parent / parent, seen + (path.resolve(),)), data)


def _relocate(data: dict) -> dict:
    """`data` (a config mapping) with keys of the older layout moved to where they live now:
    the runtime settings that used to sit in data/features/model/train (`_LEGACY_RUNTIME_KEYS`).
    A key given in both places keeps its value from the new one."""
    moved = {}
    out = dict(data)
    for (section, key), new_key in _LEGACY_RUNTIME_KEYS.items():
        block = out.get(section)
        if isinstance(block, dict) and key in block:
            block = dict(block)
            moved[new_key] = block.pop(key)
            out[section] = block
    if moved:
        runtime = out.get("runtime") if isinstance(out.get("runtime"), dict) else {}
        out["runtime"] = {**moved, **runtime}
    return out


def load_config(
    experiment: typing.Optional[str] = None,
    config_file: typing.Optional[str] = None,
    corpus: typing.Optional[str] = None,
    overrides: typing.Sequence[str] = (),
) -> Config:
    """Build a Config from an experiment name or YAML file, a corpus and --set overrides."""
    path = resolve_config_path(experiment, config_file)
    data = load_experiment_yaml(path)
    per_corpus = data.pop("corpora", {}) or {}
    config = Config()
    _apply(config, _relocate(data), str(path))
    if corpus is not None:
        config.data.corpus = corpus
    corpus_block = per_corpus.get(config.data.corpus, {}) or {}
    _apply(config, _relocate(corpus_block), f"{path} (corpora.{config.data.corpus})")
    if corpus is not None:
        config.data.corpus = corpus
    for text in overrides:
        keys, value = parse_override(text)
        _apply(config, _relocate(_nest(keys, value)), f"--set {text}")
    config.validate()
    return config


def _one_of(key: str, value, allowed: typing.Sequence[str]) -> None:
    if value not in allowed:
        raise SerKerasError(f"{key}: '{value}' is not one of {', '.join(allowed)}")


def _at_least(key: str, value, low) -> None:
    if value < low:
        raise SerKerasError(f"{key}: must be >= {low}, got {value}")


def _validate(config: Config) -> None:
    data, features, sae, model, train, runtime = (config.data, config.features, config.sae, config.model,
                                                  config.train, config.runtime)
    for key, allowed in (("classifier", CLASSIFIERS), ("input_features", INPUT_FEATURES),
                         ("frontend", FRONTENDS)):
        _one_of(f"model.{key}", getattr(model, key), allowed)
    if (model.classifier == "svm") != (model.input_features == "functionals"):
        raise SerKerasError(f"model.input_features: '{model.input_features}' does not suit "
                            f"model.classifier '{model.classifier}' (the SVM reads functionals, "
                            "a network frame sequences)")
    _one_of("features.normalization", features.normalization, NORMALIZATIONS)
    _one_of("features.speaker_fallback", features.speaker_fallback, SPEAKER_FALLBACKS)
    _one_of("features.warp_mode", features.warp_mode, WARP_MODES)
    _one_of("train.protocol", train.protocol, PROTOCOLS)
    _one_of("train.validation_split", train.validation_split, VALIDATION_SPLITS)
    _one_of("train.optimizer", train.optimizer, OPTIMIZERS)
    _one_of("train.class_weight", train.class_weight, CLASS_WEIGHTS)
    _one_of("runtime.strategy", runtime.strategy, STRATEGIES)

    # features
    if features.frame_ms * data.sample_rate / 1000 < 2:
        raise SerKerasError(f"features.frame_ms: {features.frame_ms} ms is less than two samples at "
                            f"{data.sample_rate} Hz")
    if features.hop_ms * data.sample_rate / 1000 < 1:
        raise SerKerasError(f"features.hop_ms: {features.hop_ms} ms is less than one sample at {data.sample_rate} Hz")
    if features.n_bins > features.n_fft // 2 + 1:
        raise SerKerasError(f"features.n_bins: {features.n_bins} exceeds n_fft // 2 + 1 = {features.n_fft // 2 + 1}")
    _at_least("features.pca_components", features.pca_components, 1)
    _at_least("features.pca_max_frames", features.pca_max_frames, 2)
    if not features.norm_std_floor > 0:
        raise SerKerasError(f"features.norm_std_floor: must be positive, got {features.norm_std_floor}")
    if not 0 < features.f0_min_hz < features.f0_max_hz:
        raise SerKerasError(f"features.f0_min_hz: {features.f0_min_hz} must be positive and below "
                            f"features.f0_max_hz ({features.f0_max_hz})")
    for factor in features.warp_factors:
        if not 0.5 <= factor <= 2.0 or factor == 1.0:
            raise SerKerasError(f"features.warp_factors: {factor} must be in [0.5, 2] and not 1")
    if features.speech_min_contrast_db < 0 or features.speech_min_ms < 0:
        raise SerKerasError("features.speech_min_contrast_db and features.speech_min_ms must not be negative")

    # sae
    if not 0.0 < sae.sparsity < 1.0:
        raise SerKerasError(f"sae.sparsity: rho must be in (0, 1), got {sae.sparsity}")
    if not sae.clip_std > 0:
        raise SerKerasError(f"sae.clip_std: must be positive, got {sae.clip_std}")
    for key in ("batch_size", "hidden_units", "patches_per_size"):
        _at_least(f"sae.{key}", getattr(sae, key), 1)
    _at_least("sae.epochs", sae.epochs, 0)

    # model (the network's settings and the SVM's, whichever classifier is chosen: they are
    # one --set away)
    if model.lstm_layers < 1 or model.lstm_units < 1:
        raise SerKerasError(f"model.lstm_layers / model.lstm_units must be >= 1, got "
                            f"{model.lstm_layers} / {model.lstm_units}")
    if not 0.0 <= model.dropout < 1.0:
        raise SerKerasError(f"model.dropout: must be in [0, 1), got {model.dropout}")
    _at_least("model.input_noise", model.input_noise, 0)
    _at_least("model.statistics_units", model.statistics_units, 0)
    if model.frontend == "sae_conv" and not 1 <= model.block_stride <= model.block_windows:
        raise SerKerasError(f"model.block_stride: must be between 1 and model.block_windows, got "
                            f"{model.block_stride} (block_windows={model.block_windows})")
    if not model.svm_c_grid or any(c <= 0 for c in model.svm_c_grid):
        raise SerKerasError(f"model.svm_c_grid: needs positive values, got {model.svm_c_grid}")
    if not model.svm_gamma_grid:
        raise SerKerasError("model.svm_gamma_grid: is empty")
    for gamma in model.svm_gamma_grid:
        if gamma not in ("scale", "auto") and not (_is_number(gamma) and float(gamma) > 0):
            raise SerKerasError(f"model.svm_gamma_grid: {gamma!r} is not 'scale', 'auto' or a positive number")
    _at_least("model.svm_cv_folds", model.svm_cv_folds, 2)

    # train
    if not 0.0 <= train.validation_fraction < 1.0:
        raise SerKerasError(f"train.validation_fraction: {train.validation_fraction} is not in [0, 1)")
    if train.protocol == "all" and train.validation_fraction == 0:
        raise SerKerasError("train.protocol all: needs validation data to pick the epoch count of the model "
                            "trained on everything (train.validation_fraction is 0)")
    if train.refit and train.validation_fraction == 0:
        raise SerKerasError("train.refit: needs validation data to pick the epoch count "
                            "(train.validation_fraction is 0)")

    # runtime
    _at_least("runtime.jobs", runtime.jobs, 1)
    if runtime.jobs > 1 and runtime.strategy != "default":
        raise SerKerasError(f"runtime.jobs: {runtime.jobs} folds at once needs runtime.strategy default, "
                            f"not {runtime.strategy} (which spreads ONE fold over devices)")


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def config_from_dict(data: dict, source: str = "config") -> Config:
    """A Config from a saved mapping (a run directory's config.yaml), older layouts included:
    runtime keys in their former sections, and model fields an older version did not write."""
    config = Config()
    data = _relocate(data)
    model = data.get("model") or {}
    if "classifier" not in model and model.get("experiment") in _LEGACY_MODEL_FIELDS:
        data = {**data, "model": {**_LEGACY_MODEL_FIELDS[model["experiment"]], **model}}
    _apply(config, data, source)
    return config


def save_run_config(config: Config, run_dir: pathlib.Path, labels: typing.Sequence[str]) -> pathlib.Path:
    """Write the resolved config, the label order and the package version into the run."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "config.yaml"
    payload = {"ser_keras_version": __version__, "labels": list(labels), "config": config.to_dict()}
    path.write_text(yaml.safe_dump(payload, sort_keys=False))
    return path


def load_run_config(run_dir: pathlib.Path) -> tuple:
    """(Config, labels) saved by `save_run_config`."""
    path = pathlib.Path(run_dir) / "config.yaml"
    data = load_yaml(path)
    if "config" not in data or "labels" not in data:
        raise SerKerasError(f"{path}: not a ser_keras run config (missing 'config' or 'labels')")
    return config_from_dict(data["config"], str(path)), list(data["labels"])
