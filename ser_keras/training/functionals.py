"""The functionals classifier of a fold, fused with its network (``model.functionals_weights``).

Functionals of the whole recording carry to new voices better than the network's frames, and
a max-margin classifier on them generalises from few speakers; averaged with the network it
beats either alone (docs/results.md). Per fold, on the wide functionals of every recording
(``features.functionals``, cached by extraction), one classifier per condition
(``models.functionals``): ``speaker`` (each speaker z-normalised by all of their recordings, a
test speaker by their own, as the network's speaker normalisation) and ``pooled`` (as computed,
for a single served recording). Each is an SVM (``model.functionals_kernel``: RBF, one class
against the rest, or linear) on functionals standardised over its training data:

1. C from ``model.functionals_c_grid``: the one with the highest UA on the validation part when
   trained on the training part (ties: the smaller C);
2. the softmax temperature applied to its decision values: the one with the highest
   likelihood of the validation part's labels (a grid), so its probabilities are calibrated to
   average with the network's;
3. the classifier refitted with that C on training + validation (like exp1's SVM: more
   speakers; the network keeps early stopping's use of the validation part).

Without a validation part: the middle C of the grid and temperature 1. The fused output is
(1 - w) * network + w * functionals, w from ``model.functionals_weights`` per condition: the one
whose fusion scores the highest UA on the validation part in that condition (the network's
validation probabilities are its kept model's, whose epoch that part chose, so they flatter it
a little). The heads and their weights are saved as ``functionals.npz`` (read back on resume,
by ``evaluate`` and by ``export``).
"""

from __future__ import annotations

import typing
import warnings

import numpy as np

from ser_keras.errors import SerKerasError
from ser_keras.config import LINEAR
from ser_keras.models.functionals import CONDITIONS, FunctionalsClassifier, FunctionalsHead, rbf_basis, speaker_znorm
from ser_keras.rundir import FoldDir

ABSENT_CLASS_LOGIT = -1e3
TEMPERATURES = np.exp(np.linspace(np.log(0.1), np.log(100.0), 61))


def fuses_functionals(config) -> bool:
    return bool(config.model.functionals_weights) and config.model.classifier == "network"


def condition_inputs(functionals: np.ndarray, speakers, condition: str) -> np.ndarray:
    """What a condition's classifier reads of the (rows, D) raw functionals; rows of files
    whose functionals failed (NaN) stay zero and enter no speaker's statistics."""
    x = np.asarray(functionals, np.float32)
    ok = np.isfinite(x).all(axis=1)
    out = np.zeros_like(x)
    out[ok] = speaker_znorm(x[ok], np.asarray(speakers)[ok]) if condition == "speaker" else x[ok]
    return out


def train_functionals(context, fold_dir: FoldDir, train: np.ndarray, validation: np.ndarray,
                      test: np.ndarray, network_validation: dict) -> dict:
    """The fold's classifier (fitted, or loaded on resume) and its probabilities: ``test``
    (speaker condition), ``serving`` (pooled), ``summary`` (per condition C, temperature,
    validation UA, the weight and the fused validation UA per weight, when fitted here).
    `network_validation`: per condition the network's probabilities of the validation part, to
    choose the weights on (None: after a refit the network has trained on it; the middle weight
    then)."""
    config = context.config
    speakers = context.manifest["speaker"].astype(str).to_numpy()
    inputs = {c: condition_inputs(context.functionals, speakers, c) for c in CONDITIONS}
    summary = {}
    if fold_dir.functionals.is_file():
        classifier = FunctionalsClassifier.load(fold_dir.functionals)
    else:
        heads = {}
        for condition in CONDITIONS:
            heads[condition], summary[condition], validation_probabilities = fit_head(
                inputs[condition], context.y, len(context.labels), train, validation,
                config.model.functionals_c_grid, int(config.train.seed), config.model.functionals_kernel)
            heads[condition].weight, summary[condition]["fused_val_ua"] = choose_weight(
                config.model.functionals_weights, network_validation.get(condition), validation_probabilities,
                context.y[validation])
            summary[condition]["weight"] = heads[condition].weight
        classifier = FunctionalsClassifier(heads=heads)
        classifier.save(fold_dir.functionals)
    return {"classifier": classifier, "summary": summary,
            "test": classifier.heads["speaker"].probabilities(inputs["speaker"][test]),
            "serving": classifier.heads["pooled"].probabilities(inputs["pooled"][test])}


def choose_weight(weights, network: typing.Optional[np.ndarray], functionals: typing.Optional[np.ndarray],
                  y: np.ndarray) -> tuple:
    """(the weight of `weights` whose fusion scores the highest UA on the validation part, ties
    to the one nearest 0.5; {weight: UA}); the middle weight when there is nothing to choose on."""
    weights = sorted(float(w) for w in weights)
    if len(weights) == 1 or network is None or functionals is None or not len(y):
        return weights[len(weights) // 2], {}
    # Rounded: the same recalls averaged in another order differ in the last bits, and a tie
    # must go to the middle, not to float rounding.
    scores = {w: round(_unweighted_accuracy(y, ((1 - w) * network + w * functionals).argmax(axis=1)), 9)
              for w in weights}
    best = max(scores.values())
    weight = min((w for w in weights if scores[w] == best), key=lambda w: abs(w - 0.5))
    return weight, {str(w): round(s, 4) for w, s in scores.items()}


def fit_head(x: np.ndarray, y: np.ndarray, n_classes: int, train: np.ndarray, validation: np.ndarray, c_grid,
             seed: int, kernel: str = LINEAR) -> tuple:
    """(FunctionalsHead, {"c", "temperature", "val_ua"}, the validation part's probabilities
    from the classifier trained on the training part, or None) of one condition (module
    docstring)."""
    c_grid = sorted(float(c) for c in c_grid)
    c, temperature, val_ua, validation_probabilities = c_grid[len(c_grid) // 2], 1.0, None, None
    if len(validation) and len(np.unique(y[train])) > 1:
        best = None
        for candidate in c_grid:
            decision = _Fitted(x[train], y[train], candidate, seed, kernel, n_classes).decision(x[validation])
            ua = _unweighted_accuracy(y[validation], decision.argmax(axis=1))
            if best is None or ua > best[0]:
                best = (ua, candidate, decision)
        val_ua, c, decision = best
        temperature = _temperature(decision, y[validation])
        validation_probabilities = _softmax(temperature * decision)
    everything = np.concatenate([train, validation])
    head = _Fitted(x[everything], y[everything], c, seed, kernel, n_classes).head(temperature)
    summary = {"c": c, "temperature": round(float(temperature), 4), "val_ua": None if val_ua is None else float(val_ua)}
    return head, summary, validation_probabilities


class _Fitted:
    """One condition's SVM on standardised functionals: its decision values and, with a
    temperature, its head (``models.functionals.FunctionalsHead``)."""

    def __init__(self, x, y, c: float, seed: int, kernel: str, n_classes: int):
        from sklearn.svm import SVC, LinearSVC

        if len(np.unique(y)) < 2:
            raise SerKerasError("model.functionals_weights: the functionals classifier needs training recordings of "
                                "at least two emotions")
        self.mean = x.mean(axis=0)
        scale = x.std(axis=0)
        self.scale = np.where(scale > 0, scale, 1.0)
        z = (x - self.mean) / self.scale
        self.kernel = kernel
        self.weights = np.zeros((n_classes, z.shape[1] if kernel == LINEAR else len(z)))
        self.intercept = np.full(n_classes, ABSENT_CLASS_LOGIT)  # a class the data lacks never wins
        with warnings.catch_warnings():  # a small C converges slowly; its solution is still the margin's
            warnings.simplefilter("ignore")
            if kernel == LINEAR:
                model = LinearSVC(C=c, dual=True, max_iter=5000, random_state=seed).fit(z, y)
                classes = model.classes_
                if len(classes) == 2:  # one row for two classes: +decision is classes[1]
                    self.weights[classes] = [-model.coef_[0], model.coef_[0]]
                    self.intercept[classes] = [-model.intercept_[0], model.intercept_[0]]
                else:
                    self.weights[classes], self.intercept[classes] = model.coef_, model.intercept_
                return
            # RBF: one class against the rest per class, all over one basis of training points
            # (``gamma`` as scikit-learn's "scale" for standardised data).
            self.gamma = 1.0 / (z.shape[1] * max(float(z.var()), 1e-12))
            used = np.zeros(len(z), bool)
            for k in np.unique(y):
                model = SVC(C=c, kernel="rbf", gamma=self.gamma).fit(z, (y == k).astype(int))
                self.weights[k, model.support_] = model.dual_coef_[0]
                self.intercept[k] = model.intercept_[0]
                used[model.support_] = True
            self.support = z[used]
            self.weights = self.weights[:, used]

    def decision(self, x) -> np.ndarray:
        return self._features(x) @ self.weights.T + self.intercept

    def _features(self, x) -> np.ndarray:
        z = (np.asarray(x, np.float64) - self.mean) / self.scale
        return z if self.kernel == LINEAR else rbf_basis(z, self.support, self.gamma)

    def head(self, temperature: float) -> FunctionalsHead:
        """softmax(T * decision) as a head: for the linear SVM the standardisation folds into
        one affine map of the raw functionals; the RBF head keeps it and its basis."""
        if self.kernel == LINEAR:
            kernel = temperature * (self.weights / self.scale).T
            bias = temperature * (self.intercept - self.weights @ (self.mean / self.scale))
            return FunctionalsHead(kernel.astype(np.float32), bias.astype(np.float32))
        return FunctionalsHead((temperature * self.weights.T).astype(np.float32),
                               (temperature * self.intercept).astype(np.float32),
                               # Half precision: the basis is most of an export's size, and 3
                               # significant digits of standardised values move its distances by
                               # far less than the classes are apart.
                               support=self.support.astype(np.float16), mean=self.mean.astype(np.float32),
                               scale=self.scale.astype(np.float32), gamma=float(self.gamma))


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _temperature(decision: np.ndarray, y: np.ndarray) -> float:
    """The grid temperature whose softmax gives the validation labels the highest likelihood."""
    best, best_nll = 1.0, np.inf
    for t in TEMPERATURES:
        logits = t * decision
        logits = logits - logits.max(axis=1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        nll = -log_p[np.arange(len(y)), y].mean()
        if nll < best_nll:
            best, best_nll = float(t), nll
    return best


def _unweighted_accuracy(y_true, y_pred) -> float:
    classes = np.unique(y_true)
    return float(np.mean([np.mean(y_pred[y_true == k] == k) for k in classes]))
