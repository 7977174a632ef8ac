"""Results, re-scoring, figures and reports.

- ``fit``: ``fit(config, run_dir)``: train every fold (``training.run``), then pool the results.
- ``results``: per-fold predictions -> run-level ``predictions.csv``, ``results.json``, confusion PNG.
- ``plots``: the paper's Fig. 3 (confusion matrix) and Fig. 4 (WA per experiment) in matplotlib (Agg).
- ``evaluate``: ``evaluate_run`` re-scores a run or evaluates it on another corpus (cross-corpus).
- ``estimate``: the figure of a protocol run that estimates a deployed (protocol "all") model.
- ``reproduce``: ``reproduce`` runs exp1-exp4 and the paper's side analyses and writes ``report.md``.
- ``baseline``: openSMILE eGeMAPS / ComParE functionals + SVM (optional ``opensmile`` package).

WA and UA themselves are ``ser_keras.metrics`` (training scores its epochs with them too).
Submodules import TensorFlow or matplotlib; import them directly.
"""
