"""The command line: `python -m pipeline run|query|train|evaluate ...`. Thin: parse, call, print."""
from __future__ import annotations

import argparse
import gc
import logging
import shlex
import sys
from pathlib import Path


def _model_options(parser: argparse.ArgumentParser, *tasks: str, imported: bool = True) -> None:
    """--TASK_model and --TASK_precision; ``imported=False`` leaves them out (the choices come from
    pipeline.models, which imports torch, and another command is being run)."""
    if not imported:
        return
    from pipeline.models import PRECISIONS

    for task in tasks:
        parser.add_argument(f"--{task}_model", default=None,
                            help=f"Hugging Face model id or local folder for the {task} model (default: the project's own)")
        parser.add_argument(f"--{task}_precision", choices=PRECISIONS, default="auto",
                            help=f"as the pipeline's --{task}_precision (default auto, as the pipeline runs)")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or with ``command`` only that command's options in full: the pipeline's
    options import Beam and the models' modules (torch), seconds that ``query``, ``schema`` and
    ``--help`` do not need."""
    def wants(name: str) -> bool:
        return command is None or command == name

    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the pipeline over files (any Beam pipeline option is accepted too)")
    watch = commands.add_parser("watch", help="keep running: process each file that lands in --input (a folder) until Ctrl-C")
    if wants("run") or wants("watch"):
        from pipeline.options import NewsPipelineOptions

        NewsPipelineOptions._add_argparse_args(run)
        NewsPipelineOptions._add_argparse_args(watch)

    query = commands.add_parser("query", help="run SQL over the output tables with DuckDB and print the result")
    query.add_argument("--output", required=True, help="the pipeline's output folder")
    query.add_argument("--max_rows", type=int, default=40)
    query.add_argument("sql", help="SQL over the views articles, entities, quotes, stances, errors")

    schema = commands.add_parser("schema", help="print the output tables' columns (Markdown, as in the README)")
    schema.add_argument("table", nargs="?", default=None, help="one table (default: all)")

    train = commands.add_parser("train", help="train a default model").add_subparsers(dest="task", required=True)
    train_ner = train.add_parser("ner", help="fine-tune the NER model on CoNLL-2003 (eng.train, dev eng.testa)")
    train_ner.add_argument("--data", required=True, help="folder with eng.train and eng.testa")
    train_ner.add_argument("--out", required=True, help="artifact folder to write")
    train_ner.add_argument("--epochs", type=int, default=5)
    train_ner.add_argument("--lr", type=float, default=1e-4)
    train_ner.add_argument("--seed", type=int, default=13)
    train_ner.add_argument("--limit", type=int, default=None, help="train on the first N sentences only (smoke runs)")

    train_stance = train.add_parser("stance", help="fine-tune the stance model on CAMEO-class sentences and data/quote_stance.tsv")
    train_stance.add_argument("--data", required=True, help="CAMEO-class TSV (sentence<TAB>0-4)")
    train_stance.add_argument("--quotes", default=None, help="project quote TSV (default: data/quote_stance.tsv)")
    train_stance.add_argument("--out", required=True, help="artifact folder to write")
    train_stance.add_argument("--epochs", type=int, default=8)
    train_stance.add_argument("--frozen_layers", type=int, default=0, help="lowest encoder layers kept as shipped")
    train_stance.add_argument("--quote_repeat", type=int, default=2, help="times each project quote is seen per epoch")
    train_stance.add_argument("--lr", type=float, default=5e-5)
    train_stance.add_argument("--seed", type=int, default=13)
    train_stance.add_argument("--limit", type=int, default=None, help="use the first N examples of each file only (smoke runs)")

    card = commands.add_parser("card", help="(re)write an artifact's MODEL_CARD.md from fresh measurements")
    card.add_argument("task", choices=["ner", "stance"])
    card.add_argument("--artifact", required=True, help="artifact folder")
    card.add_argument("--data", required=True, help="CoNLL folder (ner) or CAMEO-class TSV (stance)")
    card.add_argument("--quotes", default=None, help="project quote TSV (stance; default data/quote_stance.tsv)")

    calibrate = commands.add_parser("calibrate", help="store an artifact's int8 calibration ranges (SmoothQuant input "
                                    "scales; train writes them itself)")
    calibrate.add_argument("task", choices=["ner", "stance"])
    calibrate.add_argument("--artifact", required=True, help="artifact folder; artifact.json gains an int8_ranges entry")
    calibrate.add_argument("--data", required=True, help="CoNLL folder or eng.train (ner: its first 2,000 sentences) or "
                           "CAMEO-class TSV (stance: its train split)")
    calibrate.add_argument("--quotes", default=None, help="project quote TSV (stance: its train split; default data/quote_stance.tsv)")

    compact = commands.add_parser("compact", help="store an fp16 artifact's weights as 6-bit changes from the pip base "
                                  "encoder, zstd (the default artifacts' form; train writes it itself)")
    compact.add_argument("--artifact", required=True, help="artifact folder, rewritten in place")

    evaluate = commands.add_parser("evaluate", help="score a model").add_subparsers(dest="task", required=True)
    eval_ner = evaluate.add_parser("ner", help="entity-level P/R/F1 (seqeval, strict IOB2) on a CoNLL file")
    eval_ner.add_argument("--conll", required=True)
    _model_options(eval_ner, "ner", imported=wants("evaluate"))
    eval_stance = evaluate.add_parser("stance", help="per-class F1, confusion matrix, ECE on a labelled TSV")
    eval_stance.add_argument("--tsv", required=True, help="CAMEO-class file (sentence<TAB>0-4) or data/quote_stance.tsv")
    eval_stance.add_argument("--split", choices=["train", "dev"], default=None,
                             help="only this split (CAMEO files: the fixed hash split used in training; project files: the split column)")
    _model_options(eval_stance, "stance", imported=wants("evaluate"))
    eval_quotes = evaluate.add_parser("quotes", help="quote and speaker scores on a PolNeAR-style folder (text/, attributions/)")
    eval_quotes.add_argument("--polnear", required=True, help="folder with text/*.txt and attributions/*.ann")
    eval_quotes.add_argument("--ner", action="store_true", help="give the quote finder the NER model's entities (as the pipeline does)")
    _model_options(eval_quotes, "ner", imported=wants("evaluate"))
    eval_precision = evaluate.add_parser(
        "precision", help="how much --ner_precision / --stance_precision change the outputs against fp32, on unlabelled articles")
    eval_precision.add_argument("--corpus", required=True, help="folder of articles (.txt, .jsonl, .html)")
    eval_precision.add_argument("--articles", type=int, default=None, help="only the first N articles (default: all)")
    _model_options(eval_precision, "ner", "stance", imported=wants("evaluate"))
    return parser


# The collector's third threshold while `run` and `watch` start (middle-generation collections
# before a full one): none comes before models.freeze_loaded_objects sets it back.
NO_FULL_COLLECTIONS = 1_000_000


def defer_full_collections() -> None:
    """No full garbage collection until the models are loaded and frozen. Starting `run` or `watch`
    imports Beam, torch and transformers and loads the models: 530,000 objects that live as long as
    the process, and little garbage; each full collection walked all of them so far, and together
    they took 0.9 to 1.0 s of a 100-article run's 12.7 to 13.6 s (bench/RESULTS.md "Start-up"). Young collections go
    on as before."""
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, NO_FULL_COLLECTIONS)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    verbose = "-v" in argv or "--verbose" in argv
    command = next((a for a in argv if not a.startswith("-")), "")  # "" for a bare --help: no command's options
    if command in ("run", "watch"):  # both load the models in check_models, which freezes them
        defer_full_collections()
    _configure_logging(verbose, quiet_transformers=command not in ("", "query", "schema"))
    parser = build_parser(command)
    args, beam_args = parser.parse_known_args(argv)
    if beam_args and args.command not in ("run", "watch"):
        parser.error(f"unrecognized arguments: {' '.join(beam_args)}")
    command_line = "python -m pipeline " + " ".join(shlex.quote(a) for a in argv)
    try:
        if args.command == "run":
            from pipeline.run import run

            counts = run(argv[argv.index("run") + 1:])
            print(" ".join(f"{k}={v}" for k, v in counts.items()))
        elif args.command == "schema":
            from schemas import TABLES, markdown_table

            for name in [args.table] if args.table else TABLES:
                print(f"#### {name}\n\n{markdown_table(name)}\n")
        elif args.command == "watch":
            from pipeline.run import watch

            counts = watch(argv[argv.index("watch") + 1:])
            print(" ".join(f"{k}={v}" for k, v in counts.items()))
        elif args.command == "query":
            from pipeline.query import print_query

            print_query(args.output, args.sql, max_rows=args.max_rows)
        elif args.command == "train" and args.task == "ner":
            from pipeline.train.ner import train_ner

            print(train_ner(args.data, args.out, epochs=args.epochs, lr=args.lr, seed=args.seed, limit=args.limit,
                            command=command_line))
        elif args.command == "card":
            from pipeline.model_card import card_ner, card_stance

            path = card_ner(args.artifact, args.data) if args.task == "ner" else card_stance(args.artifact, args.data, args.quotes)
            print(path.read_text())
        elif args.command == "calibrate":
            from pipeline.int8 import calibrate_artifact

            entry = calibrate_artifact(args.task, args.artifact, args.data, args.quotes)
            print(f"{Path(args.artifact) / entry['file']}: {entry['calibration']}")
        elif args.command == "compact":
            from pipeline.models import compact_artifact

            path = compact_artifact(Path(args.artifact))
            print(f"{path} {path.stat().st_size / 1e6:.1f} MB")
        elif args.command == "train" and args.task == "stance":
            from pipeline.train.stance import train_stance

            print(train_stance(args.data, args.out, quotes_path=args.quotes, epochs=args.epochs, lr=args.lr, seed=args.seed,
                               limit=args.limit, frozen_layers=args.frozen_layers, quote_repeat=args.quote_repeat,
                               command=command_line))
        elif args.command == "evaluate" and args.task == "stance":
            from pipeline.evaluate import evaluate_stance
            from pipeline.models import load_model

            print(evaluate_stance(load_model("stance", args.stance_model, args.stance_precision), args.tsv, args.split))
        elif args.command == "evaluate" and args.task == "quotes":
            from pipeline.polnear import evaluate_quotes

            print(evaluate_quotes(args.polnear, ner_model=args.ner_model if args.ner else None, use_ner=args.ner,
                                  ner_precision=args.ner_precision))
        elif args.command == "evaluate" and args.task == "precision":
            from pipeline.evaluate import evaluate_precision
            from pipeline.models import load_model

            if args.articles is not None and args.articles < 1:
                raise ValueError(f"--articles must be at least 1, got {args.articles}")
            pairs = [(load_model(task, ref, "fp32"), load_model(task, ref, precision)) for task, ref, precision in
                     (("ner", args.ner_model, args.ner_precision), ("stance", args.stance_model, args.stance_precision))]
            print(evaluate_precision(args.corpus, pairs[0], pairs[1], args.articles))
        elif args.command == "evaluate" and args.task == "ner":
            from pipeline.evaluate import evaluate_ner
            from pipeline.models import load_model

            print(evaluate_ner(load_model("ner", args.ner_model, args.ner_precision), args.conll))
    except Exception as exc:
        if not isinstance(exc, _input_errors()):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _input_errors() -> tuple[type[Exception], ...]:
    """Errors that mean bad input or a bad model, printed without a traceback. Looked up in the
    modules already imported (the error came from one of them), so that no command imports torch
    or DuckDB only to name an exception class."""
    errors: list[type[Exception]] = [FileNotFoundError, ValueError]
    if "pipeline.models" in sys.modules:
        errors.append(sys.modules["pipeline.models"].ModelLoadError)
    if "duckdb" in sys.modules:
        errors.append(sys.modules["duckdb"].Error)
    return tuple(errors)


class _DropKnownNoise(logging.Filter):
    """Beam without the [gcp] extra warns about apitools on every import; it is harmless here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "apitools not found" not in record.getMessage()


def _configure_logging(verbose: bool, quiet_transformers: bool = True) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_DropKnownNoise())
    if not verbose:
        for noisy in ("apache_beam", "urllib3", "filelock", "httpx"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    if quiet_transformers:  # importing transformers takes 0.6 s: only for the commands that use it
        _quiet_libraries()


def _quiet_libraries() -> None:
    # TOKENIZERS_PARALLELISM is left to the tokenizers library: on, unless the process forks after
    # using it. The stance model's batches of quotes are tokenized on every core the worker has
    # (models.set_torch_threads caps it with torch's threads): 0.16 -> 0.09 ms a quote on 2 cores.
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
