"""Model builders: the functional Keras models of exp2-exp4 and the exp1 SVM."""

from ser_keras.models.deep import (
    ATTENTION_LAYER,
    FUSION_HEAD,
    INPUT_NAME,
    OUTPUT_NAME,
    SPEAKER_OUTPUT,
    STATISTICS_HEAD,
    attention_model,
    attention_span_frames,
    attention_step_frames,
    build_model,
    compile_model,
    sequence_channels,
    speaker_adversary_model,
    statistics_head_trainer,
)
from ser_keras.models.svm import build_svm

__all__ = [
    "ATTENTION_LAYER",
    "FUSION_HEAD",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "SPEAKER_OUTPUT",
    "STATISTICS_HEAD",
    "attention_model",
    "attention_span_frames",
    "attention_step_frames",
    "build_model",
    "build_svm",
    "compile_model",
    "sequence_channels",
    "speaker_adversary_model",
    "statistics_head_trainer",
]
