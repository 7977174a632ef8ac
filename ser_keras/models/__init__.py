"""Model builders: the functional Keras models of exp2-exp5 and the exp1 SVM."""

from ser_keras.models.deep import (
    ATTENTION_LAYER,
    INPUT_NAME,
    OUTPUT_NAME,
    attention_model,
    attention_span_frames,
    attention_step_frames,
    build_model,
    compile_model,
)
from ser_keras.models.svm import build_svm

__all__ = [
    "ATTENTION_LAYER",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "attention_model",
    "attention_span_frames",
    "attention_step_frames",
    "build_model",
    "build_svm",
    "compile_model",
]
