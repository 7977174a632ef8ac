"""Typed configuration: dataclasses hold the schema and defaults, YAML overrides them.

Resolution order (later wins):

1. the dataclass defaults below;
2. the experiment YAML (``experiments/<experiment>.yaml``, ``DEFAULT_EXPERIMENT`` when none is
   named, or any ``--config FILE``), top level;
3. that file's ``corpora: {<corpus>: {...}}`` block for the corpus being run;
4. ``--set section.key=value`` from the command line.

Unknown keys are errors that name the key and the file, so a typo never silently
falls back to a default (``config_yaml`` reads the files onto these dataclasses). The allowed
values of the choice fields are named in ``config_checks`` (and imported from here), and every
check of the values is in ``Config.validate()`` (``config_checks.validate_config``), which
``load_config`` and ``fit`` call.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import pathlib
import typing
from dataclasses import dataclass, field

from ser_keras.config_checks import (  # noqa: F401 - the choice values: read from ser_keras.config
    ADAM, CLASSIFIERS, CLASS_WEIGHTS, CLASS_WEIGHT_BALANCED, CLASS_WEIGHT_NONE, DENSE, FALLBACK_GLOBAL,
    FALLBACK_SPEAKER_ALL, FRONTENDS, FUNCTIONALS, INPUT_FEATURES, KERNELS, LINEAR, LLD, NETWORK, NORMALIZATIONS,
    NORM_NEUTRAL_GLOBAL, NORM_NEUTRAL_SPEAKER, NORM_NONE, NORM_SPEAKER, OPTIMIZERS, PROTOCOLS, PROTOCOL_ALL,
    PROTOCOL_LOSO, PROTOCOL_RANDOM, PROTOCOL_SESSION, RBF, SAE_CONV, SGD, SPEAKER_FALLBACKS, SPECTROGRAM, SPLIT_AUTO,
    SPLIT_SPEAKERS, SPLIT_UTTERANCES, STRATEGIES, STRATEGY_DEFAULT, STRATEGY_MIRRORED, STRATEGY_MULTI_WORKER, SVM,
    VALIDATION_SPLITS,
    validate_config,
)
from ser_keras.config_yaml import apply_values, load_experiment_yaml, load_yaml, nest, parse_override
from ser_keras.errors import SerKerasError

# The experiment `fit` runs when none is named.
DEFAULT_EXPERIMENT = "exp5"


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
    # paper's neutral-speech statistics need a test speaker's labels under LOSO (docs/paper.md).
    normalization: str = NORM_SPEAKER
    # For a speaker with no neutral speech in the training fold (every test speaker under
    # LOSO): "speaker_all" uses all of that speaker's utterances (no labels), "global"
    # uses the training fold's pooled neutral statistics.
    speaker_fallback: str = FALLBACK_SPEAKER_ALL
    n_mfcc: int = 13
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
    # Test-time views (spectrogram models): every recording is also scored with its normalised
    # log-power bins warped by each of these factors (the warp of `warp_factors`, applied after
    # the normalisation and before the PCA), and the probabilities (and attention) of all views
    # are averaged, in validation, testing, predict and the export alike. [] (default) scores the
    # recording as it is; [0.9, 1.1] (the training warps) measured in docs/levers.md.
    test_warp_factors: typing.List[float] = field(default_factory=list)
    # Level (gain) normalisation (features/level.py): subtract from every log-spectrogram bin a
    # per-utterance reference (the mean log power of the loudest fifth of the frames) before
    # any other normalisation and the PCA, in training and serving, so a recording's gain does
    # not change its features except in the cells it pushes to the log floor (features/level.py).
    # Spectrogram models only (exp1/exp2 read LLDs and ignore it). False keeps the features of
    # runs made before it existed.
    level_normalization: bool = False
    # With level normalisation: every cell more than this many dB below the level reference is
    # raised to it, so the cells a low gain pushes towards the absolute log floor (which no
    # longer move with the gain) are held at a level that does not depend on the gain either.
    # It must sit above the absolute floor (-100 dB) by more than the lowest gain served takes
    # away (26 dB at 0.05) plus the reference's height over it (features/level.py). None: no
    # relative floor (runs made before it existed).
    level_floor_db: typing.Optional[float] = None
    # Spectrogram models: append a log F0 contour and a voicing flag (YIN, f0_min_hz ..
    # f0_max_hz, voicing_threshold) to every frame, beside the log-power bins; normalised per
    # speaker, not level-normalised, warped or projected by the PCA (features/pitch.py). False
    # keeps the features of runs made before it existed.
    pitch_channels: bool = False
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
    epochs: int = 8  # and patches_per_size: exp3.yaml says why
    batch_size: int = 256
    # Adam; 3e-3 reaches the plateau within 15 epochs on 20k CASIA patches (1e-3 does not).
    learning_rate: float = 3e-3
    patches_per_size: int = 8000
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
    never on the experiment's name (which only names the run). The defaults are the model of
    DEFAULT_EXPERIMENT, the YAML `fit` loads when none is named (tests/test_config.py checks
    they agree); the paper's values are in the experiment YAMLs that keep them."""

    # The run's name (and the experiment YAML that set it).
    experiment: str = DEFAULT_EXPERIMENT
    # "network" (a Keras model, exp2-exp5) or "svm" (the exp1 baseline, scikit-learn).
    classifier: str = NETWORK
    # What the model reads: "spectrogram" (log spectrogram -> normalisation -> PCA),
    # "lld" (frame LLDs: F0, formants, energy, ZCR, MFCC) or "functionals" (their
    # utterance statistics, for the SVM).
    input_features: str = SPECTROGRAM
    # The network's first stage: "sae_conv" (SAE-learned kernels + block pooling, exp3-5) or
    # "dense" (a ReLU layer on every frame, exp2).
    frontend: str = SAE_CONV
    dense_units: int = 512  # exp2
    # The paper's exp4: 30 (exp4.yaml says why 64).
    lstm_units: int = 64
    lstm_layers: int = 2
    bidirectional: bool = True
    attention: bool = True
    # Block pooling after the SAE convolution (eq. 5-6): mean over windows of
    # `pool_window` frames, then mean and variance over blocks of `block_windows` windows,
    # one block every `block_stride` windows.
    pool_window: int = 3
    block_windows: int = 10
    block_stride: int = 5
    # Fine-tune the SAE kernels by back-propagation after their pre-training (the paper keeps
    # them frozen; exp3.yaml says why).
    fine_tune_kernels: bool = True
    # Units of a dense layer on utterance statistics of the input frames (mean, std and
    # frame-to-frame dynamics per channel, layers/statistics_pooling.py), fused with the pooled
    # sequence before the classifier (exp5); 0 (the paper's models) has no such branch.
    statistics_units: int = 64
    # The functionals classifier fused with the network (exp5; training/functionals.py): an
    # RBF SVM on the recording's wide functionals (features/functionals.py), its C chosen by
    # validation UA from `functionals_c_grid`, its decision values turned into probabilities by
    # a softmax whose temperature is fitted on the validation speakers too. The fused output is
    # (1 - w) * network + w * functionals, w from `functionals_weights`: the one whose fusion
    # scores the highest validation UA (one value: that one); [] (the paper's models) trains no
    # such classifier. No weight under a half: the validation part flatters the network (it
    # chose the network's epoch, and on a corpus of few speakers it holds out utterances of
    # the training voices), which loses more from validation to new speakers than the
    # functionals do (docs/results.md).
    functionals_weights: typing.List[float] = field(default_factory=lambda: [0.5, 0.75])
    functionals_c_grid: typing.List[float] = field(default_factory=lambda: [1.0, 10.0, 100.0])
    # "rbf" (one class against the rest per class, one basis of support vectors) or "linear"
    # (its C from the same grid, which then wants smaller values: 1e-5..1e-2). RBF scored the
    # higher validation UA on both EMO-DB and CASIA (docs/results.md).
    functionals_kernel: str = RBF
    dropout: float = 0.5
    # Gaussian input noise: the paper's 0.1 (exp2.yaml); 0.5 for the unwhitened PCA channels (exp3.yaml).
    input_noise: float = 0.5
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
    protocol: str = PROTOCOL_LOSO
    folds: int = 10  # for protocol=random
    # Validation for early stopping, from a fold's training part only (data/splits.py):
    # "auto" holds out whole training speakers under loso/session (speaker-independent, like
    # the test) when at least 3 remain to train on, else (and under random) a stratified
    # sample of training utterances (data/splits.py).
    validation_split: str = SPLIT_AUTO  # auto | speakers | utterances
    # Share of the training speakers (or utterances) held out: 2 of 9 EMO-DB speakers per fold.
    validation_fraction: float = 0.2
    # Networks: after early stopping, train a fresh model on the WHOLE training part (the
    # validation speakers too) for the number of epochs validation picked, and test that one
    # (folds/<fold>/refit/). More training speakers, about twice the training time. exp1's
    # SVM always refits on training + validation.
    refit: bool = False
    optimizer: str = ADAM  # adam | sgd
    learning_rate: float = 1e-3
    momentum: float = 0.9
    batch_size: int = 32  # the paper updates every 10 sequences (exp2.yaml says why 32)
    epochs: int = 40
    patience: int = 8
    # "balanced" weights each class by n / (n_classes * n_class) in the loss, which lifts UA on
    # imbalanced corpora (EMO-DB); "none" is the paper's plain cross-entropy.
    class_weight: str = CLASS_WEIGHT_NONE  # none | balanced
    # Networks (exp2-exp5): validate, keep and test an exponential moving average of the weights (Keras'
    # optimizer EMA, updated every step with this momentum; its horizon is about
    # 1 / (1 - momentum) steps) instead of the last step's weights (exp5.yaml says why 0.95).
    # None: off (the paper's models).
    ema_momentum: typing.Optional[float] = 0.95


@dataclass
class RuntimeConfig:
    """Where and how a run executes, and which part of it: nothing here changes what a fold
    learns (beyond the floating-point rounding of `jobs`, below), so resuming a run (and its
    config hash, and `fit --estimate-from`) compares every other section and never this one
    (training/resume.py)."""

    # The corpus directory (--data-dir); None -> the corpus' environment variable.
    data_dir: typing.Optional[str] = None
    # Where features (and the generated demo corpus) are cached; None -> $SER_KERAS_CACHE,
    # else ~/.cache/ser_keras.
    cache_dir: typing.Optional[str] = None
    strategy: str = STRATEGY_DEFAULT  # default | mirrored | multi-worker
    # Folds trained at once, each in its own process (training/parallel.py); with more than
    # one, each process gets cpu_count // jobs TensorFlow threads. A fold's numbers depend on
    # its thread count (floating-point summation order), so they differ in the last digits
    # between jobs=1 and jobs>1; the same config and jobs on the same machine repeat exactly.
    jobs: int = 1
    fold: typing.Optional[int] = None  # run one fold only (0-based)
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
        validate_config(self)


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
    apply_values(config, data, str(path))
    if corpus is not None:
        config.data.corpus = corpus
    corpus_block = per_corpus.get(config.data.corpus, {}) or {}
    apply_values(config, corpus_block, f"{path} (corpora.{config.data.corpus})")
    if corpus is not None:
        config.data.corpus = corpus
    for text in overrides:
        keys, value = parse_override(text)
        apply_values(config, nest(keys, value), f"--set {text}")
    config.validate()
    return config


def config_from_dict(data: dict, source: str = "config") -> Config:
    """A Config from a saved mapping (a run directory's config.yaml, `Config.to_dict()`): every key
    must be one of today's fields (`source` names the file in the error)."""
    config = Config()
    apply_values(config, data, source)
    return config
