"""The allowed values of the config's choice fields, and every check of a config's values.

``ser_keras.config`` holds the schema (dataclasses and defaults) and imports these names, so the
modules that implement a choice read them from there; ``Config.validate()`` calls
``validate_config``. Nothing here imports the schema: this module sits below it.
"""

from __future__ import annotations

from ser_keras.errors import SerKerasError

# The allowed values of every choice field: each value is named once here; `validate_config`,
# the modules that implement the choices and the CLI's `choices=` read these names and tuples.
NETWORK, SVM = "network", "svm"
CLASSIFIERS = (NETWORK, SVM)
SPECTROGRAM, LLD, FUNCTIONALS = "spectrogram", "lld", "functionals"
INPUT_FEATURES = (SPECTROGRAM, LLD, FUNCTIONALS)
SAE_CONV, DENSE = "sae_conv", "dense"
FRONTENDS = (SAE_CONV, DENSE)
NORM_NEUTRAL_SPEAKER, NORM_NEUTRAL_GLOBAL = "neutral_speaker", "neutral_global"
NORM_NONE, NORM_SPEAKER = "none", "speaker"
NORMALIZATIONS = (NORM_NEUTRAL_SPEAKER, NORM_NEUTRAL_GLOBAL, NORM_NONE, NORM_SPEAKER)
FALLBACK_SPEAKER_ALL, FALLBACK_GLOBAL = "speaker_all", "global"
SPEAKER_FALLBACKS = (FALLBACK_SPEAKER_ALL, FALLBACK_GLOBAL)
PROTOCOL_LOSO, PROTOCOL_SESSION, PROTOCOL_RANDOM, PROTOCOL_ALL = "loso", "session", "random", "all"
PROTOCOLS = (PROTOCOL_LOSO, PROTOCOL_SESSION, PROTOCOL_RANDOM, PROTOCOL_ALL)
SPLIT_AUTO, SPLIT_SPEAKERS, SPLIT_UTTERANCES = "auto", "speakers", "utterances"
VALIDATION_SPLITS = (SPLIT_AUTO, SPLIT_SPEAKERS, SPLIT_UTTERANCES)
ADAM, SGD = "adam", "sgd"
OPTIMIZERS = (ADAM, SGD)
CLASS_WEIGHT_NONE, CLASS_WEIGHT_BALANCED = "none", "balanced"
CLASS_WEIGHTS = (CLASS_WEIGHT_NONE, CLASS_WEIGHT_BALANCED)
STRATEGY_DEFAULT, STRATEGY_MIRRORED, STRATEGY_MULTI_WORKER = "default", "mirrored", "multi-worker"
STRATEGIES = (STRATEGY_DEFAULT, STRATEGY_MIRRORED, STRATEGY_MULTI_WORKER)
LINEAR, RBF = "linear", "rbf"
KERNELS = (LINEAR, RBF)

# The choice fields, each with its tuple of allowed values.
_CHOICES = {
    "model.classifier": CLASSIFIERS, "model.input_features": INPUT_FEATURES, "model.frontend": FRONTENDS,
    "features.normalization": NORMALIZATIONS, "features.speaker_fallback": SPEAKER_FALLBACKS,
    "train.protocol": PROTOCOLS, "train.validation_split": VALIDATION_SPLITS,
    "train.optimizer": OPTIMIZERS, "train.class_weight": CLASS_WEIGHTS, "runtime.strategy": STRATEGIES,
    "model.functionals_kernel": KERNELS,
}
# The numeric fields, each with the test its value must pass and how to say it.
_BOUNDS = {
    "features.pca_components": (lambda v: v >= 1, ">= 1"),
    "features.pca_max_frames": (lambda v: v >= 2, ">= 2"),
    "features.norm_std_floor": (lambda v: v > 0, "positive"),
    "features.speech_min_contrast_db": (lambda v: v >= 0, ">= 0"),
    "features.speech_min_ms": (lambda v: v >= 0, ">= 0"),
    "sae.sparsity": (lambda v: 0 < v < 1, "in (0, 1)"),
    "sae.clip_std": (lambda v: v > 0, "positive"),
    "sae.batch_size": (lambda v: v >= 1, ">= 1"),
    "sae.hidden_units": (lambda v: v >= 1, ">= 1"),
    "sae.patches_per_size": (lambda v: v >= 1, ">= 1"),
    "sae.epochs": (lambda v: v >= 0, ">= 0"),
    "model.lstm_layers": (lambda v: v >= 1, ">= 1"),
    "model.lstm_units": (lambda v: v >= 1, ">= 1"),
    "model.dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "model.input_noise": (lambda v: v >= 0, ">= 0"),
    "model.statistics_units": (lambda v: v >= 0, ">= 0"),
    "model.svm_cv_folds": (lambda v: v >= 2, ">= 2"),
    "train.validation_fraction": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "runtime.jobs": (lambda v: v >= 1, ">= 1"),
}


def validate_config(config) -> None:
    """Every check of a ``config.Config``'s values, before anything runs: one line naming the
    key and the value on the first failure."""

    def get(dotted: str):
        section, key = dotted.split(".")
        return getattr(getattr(config, section), key)

    for key, allowed in _CHOICES.items():
        if get(key) not in allowed:
            raise SerKerasError(f"{key}: '{get(key)}' is not one of {', '.join(allowed)}")
    for key, (ok, text) in _BOUNDS.items():
        if not ok(get(key)):
            raise SerKerasError(f"{key}: must be {text}, got {get(key)}")
    features, model, train, runtime, rate = (config.features, config.model, config.train, config.runtime,
                                             config.data.sample_rate)
    if (model.classifier == SVM) != (model.input_features == FUNCTIONALS):
        raise SerKerasError(f"model.input_features: '{model.input_features}' does not suit "
                            f"model.classifier '{model.classifier}' (the SVM reads functionals, "
                            "a network frame sequences)")
    if features.frame_ms * rate / 1000 < 2 or features.hop_ms * rate / 1000 < 1:
        raise SerKerasError(f"features.frame_ms / hop_ms: {features.frame_ms} / {features.hop_ms} ms give less than "
                            f"two samples a frame or one a hop at {rate} Hz")
    if features.n_bins > features.n_fft // 2 + 1:
        raise SerKerasError(f"features.n_bins: {features.n_bins} exceeds n_fft // 2 + 1 = {features.n_fft // 2 + 1}")
    if not 0 < features.f0_min_hz < features.f0_max_hz:
        raise SerKerasError(f"features.f0_min_hz: {features.f0_min_hz} must be positive and below "
                            f"features.f0_max_hz ({features.f0_max_hz})")
    if features.level_floor_db is not None and features.level_floor_db <= 0:
        raise SerKerasError(f"features.level_floor_db: must be positive dB (or null), got {features.level_floor_db}")
    for weight in model.functionals_weights:
        if not 0 < weight <= 1:
            raise SerKerasError(f"model.functionals_weights: {weight} must be in (0, 1] (an empty list: no fusion)")
    if model.functionals_weights and model.classifier != NETWORK:
        raise SerKerasError(f"model.functionals_weights: {model.functionals_weights} fuses a functionals classifier "
                            "with a network; exp1 is an SVM already (set it to [])")
    if model.functionals_weights and (not model.functionals_c_grid or min(model.functionals_c_grid) <= 0):
        raise SerKerasError(f"model.functionals_c_grid: {model.functionals_c_grid} must hold positive values")
    if model.functionals_weights and rate != 16000:
        raise SerKerasError(f"model.functionals_weights: the wide functionals are computed at 16 kHz, not "
                            f"data.sample_rate {rate} (set it to [])")
    for name in ("warp_factors", "test_warp_factors"):
        for factor in getattr(features, name):
            if not 0.5 <= factor <= 2.0 or factor == 1.0:
                raise SerKerasError(f"features.{name}: {factor} must be in [0.5, 2] and not 1")
    if features.test_warp_factors and model.input_features != SPECTROGRAM:
        raise SerKerasError("features.test_warp_factors: test-time views warp the spectrogram; "
                            f"{model.experiment} reads {model.input_features} features")
    if model.frontend == SAE_CONV and not 1 <= model.block_stride <= model.block_windows:
        raise SerKerasError(f"model.block_stride: must be between 1 and model.block_windows, got "
                            f"{model.block_stride} (block_windows={model.block_windows})")
    if not model.svm_c_grid or any(c <= 0 for c in model.svm_c_grid):
        raise SerKerasError(f"model.svm_c_grid: needs positive values, got {model.svm_c_grid}")
    if not model.svm_gamma_grid:
        raise SerKerasError("model.svm_gamma_grid: is empty")
    for gamma in model.svm_gamma_grid:
        if gamma not in ("scale", "auto") and not (_is_number(gamma) and float(gamma) > 0):
            raise SerKerasError(f"model.svm_gamma_grid: {gamma!r} is not 'scale', 'auto' or a positive number")
    if train.ema_momentum is not None and not 0 < train.ema_momentum < 1:
        raise SerKerasError(f"train.ema_momentum: must be in (0, 1) (or null), got {train.ema_momentum}")
    for setting, on in (("train.protocol all", train.protocol == PROTOCOL_ALL), ("train.refit", train.refit)):
        if on and train.validation_fraction == 0:
            raise SerKerasError(f"{setting}: needs validation data to pick the epoch count "
                                "(train.validation_fraction is 0)")
    if runtime.jobs > 1 and runtime.strategy != STRATEGY_DEFAULT:
        raise SerKerasError(f"runtime.jobs: {runtime.jobs} folds at once needs runtime.strategy default, "
                            f"not {runtime.strategy} (which spreads ONE fold over devices)")


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True
