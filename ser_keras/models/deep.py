"""Functional Keras models of experiments 2-4.

exp2  features -> Masking -> GaussianNoise -> Dense(512, ReLU) -> Dropout -> (B)LSTM -> Dropout
      -> softmax                                                     (LLD frames)
exp3  features -> Masking -> GaussianNoise -> SparseAEConv -> BlockPooling -> Dropout -> (B)LSTM
      -> Dropout -> softmax                                          (PCA-60 spectrogram)
exp4  exp3 with every recurrent layer returning sequences, then AttentionPooling before the
      last Dropout (the paper's headline model).

What varies lives in `config.model`: `experiment` picks the front end (exp2: dense on
frames, exp3/exp4: SAE convolution + block pooling); `lstm_units`, `lstm_layers`,
`bidirectional` and `attention` shape the recurrent part, so exp3 is `lstm_units=128,
lstm_layers=1, attention=false` and exp4 `lstm_units=30, lstm_layers=2, attention=true`
(the experiment YAMLs set them), and `bidirectional=false` gives the paper's LSTM-vs-BLSTM
comparison. The paper puts 50% dropout "on all layers"; here there is one Dropout after the
front end and one before the classifier.

The input is zero padded; `Masking(0.0)` right after the input turns the padding into a
mask that every later layer honours, so a prediction does not depend on the batch an
utterance was padded in.
"""

from __future__ import annotations

import keras

from ser_keras.config import Config
from ser_keras.errors import SerKerasError
from ser_keras.features.channels import PITCH_CHANNELS, pitch_channel_count
from ser_keras.layers import (AttentionPooling, BlockPooling, ChannelSlice, GradientReversal, SparseAEConv,
                              StatisticsPooling)

INPUT_NAME = "features"
OUTPUT_NAME = "probabilities"
ATTENTION_LAYER = "attention_pooling"
SPEAKER_OUTPUT = "speaker"
# model.statistics_head: the two classifiers whose mean is the model's output.
FUSION_HEAD = "fusion_probabilities"
STATISTICS_HEAD = "statistics_probabilities"
ADVERSARY_UNITS = 64


class _Seeds:
    """Distinct, reproducible seeds for every random initializer / noise / dropout layer.

    Seeded Keras initializers return the same values on every call, so each layer (and the
    two directions of a Bidirectional) must get its own seed.
    """

    def __init__(self, base: int):
        self._next = int(base) * 1000

    def __call__(self) -> int:
        self._next += 1
        return self._next


def _recurrent(config: Config, units: int, return_sequences: bool, name: str, seeds: _Seeds):
    """One LSTM layer, or a Bidirectional pair with independently seeded directions."""
    scale = config.model.init_scale

    def lstm(name: str, go_backwards: bool = False):
        return keras.layers.LSTM(
            units,
            return_sequences=return_sequences,
            go_backwards=go_backwards,
            kernel_initializer=keras.initializers.RandomUniform(-scale, scale, seed=seeds()),
            recurrent_initializer=keras.initializers.RandomUniform(-scale, scale, seed=seeds()),
            name=name,
        )

    if not config.model.bidirectional:
        return lstm(name)
    # Bidirectional renames its copies forward_<name> / backward_<name>.
    return keras.layers.Bidirectional(
        lstm(name),
        backward_layer=lstm(f"backward_{name}", go_backwards=True),
        merge_mode="concat",
        name=name,
    )


def _check(config: Config, n_classes: int, input_dim: int) -> None:
    if config.model.classifier != "network":
        raise SerKerasError(f"model.classifier: '{config.model.classifier}' is not a network; "
                            "use models.build_svm(config) for the SVM")
    if int(n_classes) < 2:
        raise SerKerasError(f"build_model: need at least 2 classes, got n_classes={n_classes}")
    if int(input_dim) < 1:
        raise SerKerasError(f"build_model: input_dim must be positive, got {input_dim}")


def build_model(config: Config, n_classes: int, input_dim: int) -> keras.Model:
    """The exp2 / exp3 / exp4 model for `config.model.experiment`.

    Args:
        config: the resolved run config (`model`, `sae` and `train.seed` are read).
        n_classes: number of emotion classes.
        input_dim: feature dimension D of the zero-padded `(batch, frames, D)` input
            (60 for the PCA spectrogram of exp3/exp4, the LLD count for exp2).

    Returns:
        An uncompiled `keras.Model` with one input named "features" and one output named
        "probabilities". With attention on it has a layer named "attention_pooling" whose
        second output is alpha (see `attention_model`). For exp3/exp4 the SAE kernels
        still have to be assigned (`training.sae_pretrain.assign_kernels`).
    """
    _check(config, n_classes, input_dim)
    m = config.model
    seeds = _Seeds(config.train.seed)

    # Layers.
    masking = keras.layers.Masking(mask_value=0.0, name="masking")
    noise = keras.layers.GaussianNoise(m.input_noise, seed=seeds(), name="input_noise")
    if m.frontend == "dense":
        frontend = [
            keras.layers.Dense(
                m.dense_units,
                activation="relu",
                kernel_initializer=keras.initializers.GlorotUniform(seed=seeds()),
                name="dense",
            )
        ]
    else:
        frontend = [
            SparseAEConv(
                kernel_sizes=config.sae.kernel_sizes,
                units=config.sae.hidden_units,
                fine_tune=m.fine_tune_kernels,
                kernel_initializer=keras.initializers.GlorotUniform(seed=seeds()),
                name="sae_conv",
            ),
            BlockPooling(
                pool_window=m.pool_window,
                block_windows=m.block_windows,
                block_stride=m.block_stride,
                name="block_pooling",
            ),
        ]
    frontend_dropout = keras.layers.Dropout(m.dropout, seed=seeds(), name="frontend_dropout")
    prefix = "blstm" if m.bidirectional else "lstm"
    recurrent = [
        _recurrent(
            config,
            m.lstm_units,
            return_sequences=m.attention or i < m.lstm_layers - 1,
            name=f"{prefix}_{i + 1}",
            seeds=seeds,
        )
        for i in range(m.lstm_layers)
    ]
    attention = None
    if m.attention:
        attention = AttentionPooling(
            kernel_initializer=keras.initializers.RandomUniform(
                -m.init_scale, m.init_scale, seed=seeds()
            ),
            return_attention=True,
            name=ATTENTION_LAYER,
        )
    statistics = None
    if m.statistics_units:
        # Utterance statistics of the (noise-free) input frames beside the pooled sequence.
        statistics = [
            StatisticsPooling(
                deltas=True,
                percentiles=m.statistics_percentiles,
                # The pitch channels come last in every frame.
                voiced_channel=(PITCH_CHANNELS.index("voicing") - len(PITCH_CHANNELS)
                                if m.statistics_voiced else None),
                name="statistics_pooling",
            ),
            keras.layers.Dense(
                m.statistics_units,
                activation="relu",
                kernel_initializer=keras.initializers.GlorotUniform(seed=seeds()),
                name="statistics_dense",
            ),
            keras.layers.Dropout(m.dropout, seed=seeds(), name="statistics_dropout"),
        ]
    dropout = keras.layers.Dropout(m.dropout, seed=seeds(), name="dropout")
    classifier = keras.layers.Dense(
        n_classes,
        activation="softmax",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seeds()),
        name=FUSION_HEAD if m.statistics_head else OUTPUT_NAME,
    )
    statistics_classifier = None
    if m.statistics_head:
        statistics_classifier = keras.layers.Dense(
            n_classes,
            activation="softmax",
            kernel_initializer=keras.initializers.GlorotUniform(seed=seeds()),
            name=STATISTICS_HEAD,
        )

    # Functional graph.
    inputs = keras.Input(shape=(None, input_dim), dtype="float32", name=INPUT_NAME)
    masked = masking(inputs)
    x = noise(masked)
    if sequence_channels(config, input_dim) < input_dim:
        x = ChannelSlice(sequence_channels(config, input_dim), name="sequence_channels")(x)
    for layer in frontend:
        x = layer(x)
    x = frontend_dropout(x)
    for layer in recurrent:
        x = layer(x)
    if attention is not None:
        x, _alpha = attention(x)
    x = dropout(x)
    if statistics is not None:
        summary = masked
        for layer in statistics:
            summary = layer(summary)
        x = keras.layers.Concatenate(name="fusion")([x, summary])
    outputs = classifier(x)
    if statistics_classifier is not None:
        outputs = keras.layers.Average(name=OUTPUT_NAME)([outputs, statistics_classifier(summary)])
    return keras.Model(inputs, outputs, name=f"ser_{m.experiment}")


def sequence_channels(config: Config, input_dim: int) -> int:
    """Input channels the front end and the recurrent layers read: all of them, or without the
    trailing pitch channels when only the statistics branch reads those (model.pitch_into)."""
    if config.model.pitch_into == "statistics" and config.model.statistics_units:
        return int(input_dim) - pitch_channel_count(config.features)
    return int(input_dim)


def attention_model(model: keras.Model) -> keras.Model:
    """`Model(inputs, [probabilities, alpha])` sharing `model`'s layers and weights.

    alpha has shape `(batch, steps)`: one weight per recurrent step (block), zero on
    padding; `attention_step_frames(config)` converts steps to input frames.
    """
    try:
        layer = model.get_layer(ATTENTION_LAYER)
    except ValueError:
        raise SerKerasError(
            f"model '{model.name}' has no '{ATTENTION_LAYER}' layer (model.attention is off)"
        ) from None
    outputs = layer.output
    if not isinstance(outputs, (list, tuple)) or len(outputs) != 2:
        raise SerKerasError(f"layer '{ATTENTION_LAYER}' of model '{model.name}' does not return alpha")
    inputs = model.input if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, [model.output, outputs[1]], name=f"{model.name}_attention")


def attention_step_frames(config: Config) -> int:
    """Input frames between consecutive recurrent (attention) steps.

    exp2 runs on frames (1); exp3/exp4 run on blocks, one every
    `block_stride` windows of `pool_window` frames. Step j covers input frames
    `[j * step, j * step + attention_span_frames(config))`.
    """
    if config.model.frontend == "dense":
        return 1
    return config.model.pool_window * config.model.block_stride


def attention_span_frames(config: Config) -> int:
    """Input frames that one recurrent (attention) step summarises (1 for exp2)."""
    if config.model.frontend == "dense":
        return 1
    return config.model.pool_window * config.model.block_windows


def speaker_adversary_model(model: keras.Model, config: Config, n_speakers: int) -> keras.Model:
    """`Model(inputs, [probabilities, speaker])` for training with a speaker adversary.

    It shares every layer and weight of `model` and adds, on the vector `model`'s classifier
    reads, a gradient reversal (weight `config.train.speaker_adversary`), one ReLU layer and a
    softmax over the `n_speakers` training speakers. Only this model is trained; `model` (the
    one saved, tested and exported) never sees the adversary.
    """
    if int(n_speakers) < 2:
        raise SerKerasError(f"train.speaker_adversary: needs at least 2 training speakers, got {n_speakers}")
    seeds = _Seeds(config.train.seed + 1)  # not the seeds of model's own layers
    shared = model.get_layer(OUTPUT_NAME).input
    x = GradientReversal(config.train.speaker_adversary, name="gradient_reversal")(shared)
    x = keras.layers.Dense(ADVERSARY_UNITS, activation="relu",
                           kernel_initializer=keras.initializers.GlorotUniform(seed=seeds()),
                           name="adversary_dense")(x)
    speaker = keras.layers.Dense(int(n_speakers), activation="softmax",
                                 kernel_initializer=keras.initializers.GlorotUniform(seed=seeds()),
                                 name=SPEAKER_OUTPUT)(x)
    return keras.Model(model.input, [model.output, speaker], name=f"{model.name}_speaker_adversary")


def statistics_head_trainer(model: keras.Model) -> keras.Model:
    """`Model(inputs, [probabilities, fusion, statistics])` for training a model built with
    `model.statistics_head`: it shares every layer and weight of `model` and also outputs its two
    classifiers, so that each is trained with its own cross-entropy (`compile_model`) while
    validation scores their mean, the model's output."""
    heads = [model.get_layer(FUSION_HEAD).output, model.get_layer(STATISTICS_HEAD).output]
    return keras.Model(model.input, [model.output, *heads], name=f"{model.name}_heads")


def compile_model(model: keras.Model, config: Config) -> keras.Model:
    """Compile with `config.train`'s optimizer, sparse categorical cross-entropy, accuracy
    (for a `speaker_adversary_model`: cross-entropy on both outputs, accuracy on the emotion; for
    a `statistics_head_trainer`: cross-entropy on each classifier, none on their mean;
    with `train.mixup` the cross-entropy of mixed label probabilities).

    `train.optimizer`: "adam" (learning_rate) or "sgd" (learning_rate, momentum; the paper's
    optimiser, whose learning rate 1e-6 was meant for losses summed over frames);
    `train.ema_momentum`: the optimizer keeps a moving average of the trainable weights.
    """
    train = config.train
    if train.learning_rate <= 0:
        raise SerKerasError(f"train.learning_rate: must be > 0, got {train.learning_rate}")
    # With train.ema_momentum the optimizer also keeps a moving average of the weights
    # (training.callbacks.AveragedWeights swaps it in for validation and the kept model).
    average = {"use_ema": True, "ema_momentum": float(train.ema_momentum)} if train.ema_momentum else {}
    if train.optimizer == "adam":
        optimizer = keras.optimizers.Adam(learning_rate=train.learning_rate, **average)
    elif train.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(learning_rate=train.learning_rate, momentum=train.momentum, **average)
    else:
        raise SerKerasError(f"train.optimizer: '{train.optimizer}' is not adam or sgd")
    if train.mixup:  # the labels are mixed: class probabilities, not ids
        loss, accuracy = keras.losses.CategoricalCrossentropy(), keras.metrics.CategoricalAccuracy(name="accuracy")
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
        accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    metrics, weights = [accuracy], None
    names = set(model.output_names)
    if SPEAKER_OUTPUT in names:  # the speaker adversary's output: the speakers' cross-entropy
        loss = {OUTPUT_NAME: loss, SPEAKER_OUTPUT: keras.losses.SparseCategoricalCrossentropy()}
        metrics = {OUTPUT_NAME: metrics}
    elif STATISTICS_HEAD in names:  # each classifier's own cross-entropy, none on their mean (what is scored)
        loss = {OUTPUT_NAME: loss, FUSION_HEAD: loss, STATISTICS_HEAD: loss}
        weights = {OUTPUT_NAME: 0.0, FUSION_HEAD: 1.0, STATISTICS_HEAD: 1.0}
        metrics = {OUTPUT_NAME: metrics}
    model.compile(optimizer=optimizer, loss=loss, loss_weights=weights, metrics=metrics)
    return model
