"""The ``ser-keras`` command line.

Each subcommand is a thin function: parse, load the config, call the library. Errors the
user can fix (``SerKerasError``) print one line and exit 2, never a traceback. The modules that
import TensorFlow (training, evaluation, export) are imported inside the subcommands that use
them, so ``--help`` and ``info`` stay fast; that is the only reason for an import inside a
function here.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import sys
import typing

from ser_keras import __version__
from ser_keras.config import (DEFAULT_EXPERIMENT, PROTOCOL_ALL, PROTOCOL_LOSO, PROTOCOLS, STRATEGIES, DataConfig,
                              experiment_names, load_config)
from ser_keras.corpora import CORPORA, corpus_root, describe, load_manifest, unmatched_line
from ser_keras.errors import SerKerasError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
# Set by main() for the processes it starts (fold workers, feature extraction workers): "0"
# quiet, "1" verbose. They inherit the environment but not Python's logger levels.
VERBOSE_ENV = "SER_KERAS_VERBOSE"


def configure_logging(verbose: bool) -> None:
    """TensorFlow's, absl's and oneDNN's own log lines only with `verbose` (or when the user's
    TF_CPP_MIN_LOG_LEVEL asks for them). Must run before TensorFlow is imported: its C++ side
    reads TF_CPP_MIN_LOG_LEVEL once. Level 3 also hides its ERROR lines, such as oneDNN's
    "supports DT_BOOL only on platforms with AVX-512", which are notes, not errors (a real
    failure raises); what concerns the user, ser_keras says itself."""
    if "TF_CPP_MIN_LOG_LEVEL" not in os.environ:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0" if verbose else "3"
    os.environ[VERBOSE_ENV] = "1" if verbose else "0"
    _python_log_levels()


def _python_log_levels() -> None:
    """Quiet the Python loggers of TensorFlow and absl ("WARNING:tensorflow:...") when main()
    said so, here or in a parent process."""
    if os.environ.get(VERBOSE_ENV) != "0":
        return
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging
    except ImportError:  # absl comes with TensorFlow; without it there is nothing to quiet
        return
    absl_logging.set_verbosity(absl_logging.ERROR)


# A worker process started by main() (multiprocessing spawn / forkserver) imports this module
# again through the `ser-keras` script, but does not run main().
_python_log_levels()


def _add_corpus_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--corpus", required=required, choices=sorted(CORPORA),
                        help="corpus name ('demo' needs no download)")
    parser.add_argument("--data-dir", help="the corpus directory in its distributor's layout "
                        "(default: $SER_KERAS_<CORPUS>; for csv: a manifest.csv or its folder)")


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="experiment YAML file (default: the shipped experiments/<exp>.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.epochs=5 (repeatable)")
    parser.add_argument("--cache-dir", help="feature and demo-corpus cache (default ~/.cache/ser_keras)")
    parser.add_argument("--quiet", action="store_true", help="no progress display")


def build_parser() -> argparse.ArgumentParser:
    verbose_help = "also print TensorFlow's own log lines (C++, absl, oneDNN) on stderr"
    # --verbose before or after the subcommand; SUPPRESS: a subcommand without it leaves the
    # value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=verbose_help)
    parser = argparse.ArgumentParser(
        prog="ser-keras",
        description="Speech emotion recognition: PCA spectrogram -> sparse-auto-encoder CNN -> "
                    "BLSTM -> attention pooling (He, Ren & He), with the paper's four experiments.",
    )
    parser.add_argument("--version", action="version", version=f"ser-keras {__version__}")
    parser.add_argument("--verbose", action="store_true", help=verbose_help)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    info = sub.add_parser("info", parents=[common], help="summarise a corpus: utterances, speakers, labels, duration",
                          description="Summarise a corpus: utterances, speakers, utterances per label "
                                      "and per speaker, total duration.")
    _add_corpus_args(info)
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.add_argument("--print-dir", action="store_true",
                      help="print only the corpus directory (where the demo corpus is generated)")
    info.add_argument("--cache-dir", help="where the demo corpus is generated (default ~/.cache/ser_keras)")
    info.set_defaults(handler=cmd_info)

    fit = sub.add_parser("fit", parents=[common], help="train and evaluate an experiment under a named protocol",
                         description="Train an experiment on every fold of a protocol (or one fold), "
                                     "pool the test predictions and write results, TensorBoard logs, "
                                     "checkpoints and figures into the run directory. Re-running the "
                                     "same command resumes an interrupted run.")
    _add_corpus_args(fit)
    fit.add_argument("--experiment", choices=experiment_names(), default=None,
                     help="which experiment: exp1-exp4 are the paper's, exp5 goes beyond it "
                          f"(default {DEFAULT_EXPERIMENT})")
    fit.add_argument("--protocol", choices=PROTOCOLS,
                     help="leave-one-speaker-out, leave-one-session-out (IEMOCAP), seeded stratified k-fold, "
                          "or 'all': the model to deploy, trained on every speaker (no test part, no WA/UA)")
    fit.add_argument("--estimate-from", metavar="RUN2",
                     help="with --protocol all: a loso/session/random run of the same config whose figures "
                          "estimate this model's accuracy (recorded in estimate.json and the export)")
    fit.add_argument("--fold", type=int, help="run only this fold (0-based)")
    fit.add_argument("--epochs", type=int, help="training epochs (overrides train.epochs)")
    fit.add_argument("--seed", type=int, help="random seed (overrides train.seed)")
    fit.add_argument("--strategy", choices=STRATEGIES,
                     help="tf.distribute strategy (multi-worker reads TF_CONFIG)")
    fit.add_argument("--jobs", type=int,
                     help="folds trained at once, each in its own process (default 1; "
                          "e.g. the number of CPU cores: see docs/results.md, Wall time)")
    fit.add_argument("--run-dir", help="where to write the run (default runs/<corpus>_<experiment>_<protocol>)")
    _add_config_args(fit)
    fit.set_defaults(handler=cmd_fit)

    evaluate = sub.add_parser("evaluate", parents=[common], help="re-score a run, or evaluate it on another corpus",
                              description="Re-score a finished run from its saved predictions; with "
                                          "--corpus/--data-dir, evaluate its models on another corpus over "
                                          "the labels the two share (cross-corpus).")
    evaluate.add_argument("run_dir", help="a run directory written by 'ser-keras fit'")
    _add_corpus_args(evaluate, required=False)
    evaluate.add_argument("--json", action="store_true", help="print the results as JSON")
    evaluate.add_argument("--quiet", action="store_true", help="no progress display")
    evaluate.set_defaults(handler=cmd_evaluate)

    predict = sub.add_parser("predict", parents=[common], help="label audio files with a trained or exported model",
                             description="Predict the emotion of audio files (directories are searched "
                                         "recursively). Long recordings are scored in sliding windows with "
                                         "a per-window timeline. A bad file is reported by name and never "
                                         "stops the others. Exit status: 0 when at least one file was "
                                         "scored (bad ones named on stderr); 2 when none could be scored "
                                         "(every input missing, empty or corrupt) or MODEL is unusable.")
    predict.add_argument("model", help="a run directory or an export directory")
    predict.add_argument("paths", nargs="+", help="audio files or directories")
    predict.add_argument("--json", action="store_true", help="print one JSON object")
    predict.add_argument("--plot", help="PNG: spectrogram with attention weights and window labels "
                                        "(first file; or a directory for one PNG per file)")
    predict.add_argument("--fold", type=int, help="which fold's model of a run directory (default: first)")
    predict.add_argument("--same-speaker", action="store_true",
                         help="all files are recordings of ONE speaker: normalise them with the statistics "
                              "of all of their speech, as fit normalises a test speaker (default: every file "
                              "on its own, without speaker context)")
    predict.add_argument("--runtime", choices=("savedmodel", "litert"), default="savedmodel",
                         help="with an export directory: its SavedModel, or its LiteRT model (model.tflite; "
                              "a .tflite file as MODEL runs LiteRT too)")
    predict.set_defaults(handler=cmd_predict)

    export = sub.add_parser("export", parents=[common], help="export a SavedModel that takes a raw waveform",
                            description="Write a Keras SavedModel whose 'serve' endpoint takes a float32 "
                                        "waveform [batch, samples] at the training sample rate and returns "
                                        "class probabilities and attention weights; also writes model.keras.")
    export.add_argument("run_dir", help="a run directory written by 'ser-keras fit'")
    export.add_argument("--out", required=True, help="export directory")
    export.add_argument("--fold", type=int, help="which fold's model (default: first; a protocol 'all' run "
                                                 "has one, the model trained on every speaker)")
    export.add_argument("--estimate-from", metavar="RUN2",
                        help="a loso/session/random run of the same config whose figures estimate the "
                             "exported model's accuracy (in export.json and the metadata endpoint)")
    export.add_argument("--quantize", choices=("none", "float16", "int8"), default="none",
                        help="weights of model.tflite, the LiteRT model: float32 (none), float16 (the "
                             "network's weights), or dynamic-range int8 (not for a model with a functionals "
                             "classifier, such as the default)")
    export.add_argument("--no-litert", dest="litert", action="store_false",
                        help="do not write model.tflite (its conversion is about half the export's time)")
    export.set_defaults(handler=cmd_export)

    reproduce = sub.add_parser("reproduce", parents=[common],
                               help="run the paper's four experiments and write report.md",
                               description="Run exp1-exp4 under a named protocol, plus the LSTM-vs-BLSTM "
                                           "comparison and the context-frames sweep, and write report.md "
                                           "with figures next to the paper's numbers.")
    _add_corpus_args(reproduce)
    reproduce.add_argument("--protocol", choices=[p for p in PROTOCOLS if p != PROTOCOL_ALL],
                           default=PROTOCOL_LOSO)
    reproduce.add_argument("--out", help="output directory (default runs/reproduce_<corpus>_<protocol>)")
    reproduce.add_argument("--jobs", type=int, help="folds trained at once in every run, one process each (default 1)")
    _add_config_args(reproduce)
    reproduce.set_defaults(handler=cmd_reproduce)
    return parser


def cmd_info(args) -> int:
    data_config = DataConfig(corpus=args.corpus)
    root = corpus_root(args.corpus, args.data_dir, data_config, args.cache_dir)
    if args.print_dir:
        print(root)
        return 0
    manifest = load_manifest(args.corpus, args.data_dir, data_config, args.cache_dir)
    summary = describe(manifest)
    summary = {"corpus": args.corpus, "data_dir": str(root), **summary}
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"corpus      {args.corpus}")
    print(f"directory   {root}")
    print(f"utterances  {summary['utterances']}")
    print(f"speakers    {summary['speakers']}")
    print(f"duration    {summary['duration_s'] / 60:.1f} min")
    if summary["unreadable_files"]:
        print(f"unreadable  {summary['unreadable_files']} files (reported by name during extraction)")
    if summary["unmatched_files"]:
        print(f"unmatched   {unmatched_line(manifest)}")
    print("labels      " + ", ".join(f"{k} {v}" for k, v in summary["labels"].items()))
    print("per speaker " + ", ".join(f"{k} {v}" for k, v in summary["per_speaker"].items()))
    for key in ("genders", "sessions"):
        if key in summary:
            print(f"{key:<11} " + ", ".join(f"{k} {v}" for k, v in summary[key].items()))
    return 0


def _config_from_args(args, experiment: typing.Optional[str]):
    overrides = list(args.overrides)
    if getattr(args, "data_dir", None):
        overrides.insert(0, f"runtime.data_dir={args.data_dir}")
    if getattr(args, "cache_dir", None):
        overrides.insert(0, f"runtime.cache_dir={args.cache_dir}")
    for flag, key in (("protocol", "train.protocol"), ("fold", "runtime.fold"), ("epochs", "train.epochs"),
                      ("seed", "train.seed"), ("strategy", "runtime.strategy"),
                      ("jobs", "runtime.jobs")):
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"{key}={value}")
    return load_config(experiment=experiment, config_file=args.config, corpus=args.corpus, overrides=overrides)


def cmd_fit(args) -> int:
    config = _config_from_args(args, args.experiment)
    from ser_keras.evaluation import fit as fit_module

    run_dir = pathlib.Path(args.run_dir or
                           f"runs/{config.data.corpus}_{config.model.experiment}_{config.train.protocol}")
    if args.estimate_from:
        from ser_keras.evaluation.estimate import estimate_from

        if config.train.protocol != PROTOCOL_ALL:
            raise SerKerasError("--estimate-from is for --protocol all (a loso, session or random run "
                                "measures its own figure)")
        estimate_from(config, args.estimate_from)  # refuse a run of another config before training
    results = fit_module.fit(config, run_dir, progress=not args.quiet)
    if args.estimate_from:
        from ser_keras.evaluation.estimate import write_estimate
        from ser_keras.evaluation.results import collect_results

        write_estimate(run_dir, args.estimate_from)
        results = collect_results(config, run_dir, results["labels"], [f["name"] for f in results["folds"]],
                                  results.get("feature_failures"), results.get("last_invocation_s", 0.0))
    _print_results(results, run_dir)
    return 0


def _print_results(results: dict, run_dir: pathlib.Path) -> None:
    deploy = results.get("deploy")
    if results.get("protocol") == PROTOCOL_ALL:
        if deploy:
            print(f"{results.get('experiment', '')} on {results.get('corpus', '')}, protocol all: trained on "
                  f"{deploy['n_training_utterances']} utterances of {len(deploy['training_speakers'])} speakers "
                  f"({', '.join(deploy['training_speakers'])})")
        print("no test part, so no WA/UA: the protocol figure that estimates this model must come from a loso, "
              "session or random run of the same config (fit --protocol all --estimate-from RUN2)")
        estimate = results.get("estimate")
        if estimate:
            print(f"estimate ({estimate['protocol_name'] or estimate['protocol']}, {estimate['run']}): "
                  f"WA {100 * estimate['wa']:.2f} %  UA {100 * estimate['ua']:.2f} %"
                  + (f"; single recordings WA {100 * estimate['serving_wa']:.2f} %  UA "
                     f"{100 * estimate['serving_ua']:.2f} %" if estimate.get("serving_wa") is not None else ""))
        print(f"run directory: {run_dir}")
        return
    pooled = results.get("pooled", results)
    print(f"{results.get('experiment', '')} on {results.get('corpus', '')}, "
          f"protocol {results.get('protocol', '')}: WA {100 * pooled['wa']:.2f} %  UA {100 * pooled['ua']:.2f} %")
    serving = results.get("serving")
    if serving:  # speaker-normalised model: the protocol's figure adapts to each test speaker
        print(f"  (each test speaker normalised by their own speech, as serve_speaker / predict --same-speaker)\n"
              f"served on single recordings without speaker context ({serving['normalization']} statistics, "
              f"as serve / predict): WA {100 * serving['wa']:.2f} %  UA {100 * serving['ua']:.2f} %")
    print(f"run directory: {run_dir}")


def cmd_evaluate(args) -> int:
    from ser_keras.evaluation.evaluate import evaluate_run

    if args.data_dir and not args.corpus:
        raise SerKerasError("--data-dir needs --corpus for a cross-corpus evaluation")
    results = evaluate_run(args.run_dir, corpus=args.corpus, data_dir=args.data_dir, progress=not args.quiet)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        _print_results(results, pathlib.Path(args.run_dir))
    return 0


def cmd_predict(args) -> int:
    from ser_keras.inference.predict import run_predict_command

    return run_predict_command(args.model, args.paths, as_json=args.json, plot=args.plot, fold=args.fold,
                               same_speaker=args.same_speaker, runtime=args.runtime)


def cmd_export(args) -> int:
    from ser_keras.export.serving import export_run

    out = export_run(args.run_dir, args.out, fold=args.fold, estimate_from=args.estimate_from,
                     quantize=args.quantize, litert=args.litert)
    print(f"exported SavedModel to {out}")
    return 0


def cmd_reproduce(args) -> int:
    from ser_keras.evaluation.reproduce import reproduce

    out = pathlib.Path(args.out or f"runs/reproduce_{args.corpus}_{args.protocol}")
    overrides = list(args.overrides)
    if args.cache_dir:
        overrides.insert(0, f"runtime.cache_dir={args.cache_dir}")
    if args.jobs is not None:
        overrides.append(f"runtime.jobs={args.jobs}")
    report = reproduce(args.corpus, args.data_dir, args.protocol, out, overrides=overrides,
                       progress=not args.quiet)
    print(f"report: {report}")
    return 0


def main(argv: typing.Optional[typing.Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        return args.handler(args)
    except SerKerasError as exc:
        print(f"ser-keras {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"ser-keras {args.command}: interrupted; what was computed is kept — "
              "re-run the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
