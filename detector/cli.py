"""The ``detector`` program: one entry point, one subcommand per tool.

    detector train   --config synthetic.yaml            # = python tools/train.py ...
    detector eval    --gt GT.json --detections DT.json  # = python tools/eval.py ...
    detector inspect --config synthetic.yaml --out DIR  # = python tools/inspect_data.py ...

``detector-train``, ``detector-eval``, ``detector-inspect-data``, ``detector-export``
and ``detector-predict`` are the same subcommands under their own names.  Each subcommand lives in
``detector/commands/<module>.py`` and is imported only when it runs, so
``detector eval`` in file mode never imports TensorFlow.  This module is the program,
not the library: nothing under ``detector/`` imports it.
"""

from __future__ import annotations

import importlib
import os
import sys

# subcommand -> (module under detector.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train the detector (run directory, checkpoints, results.csv)"),
    "eval": ("eval", "exact COCO mAP of a detections file, a checkpoint, or a .tflite model"),
    "inspect": ("inspect", "draw an input batch and measure input-pipeline throughput"),
    "export": ("export", "export a trained model to TFLite (INT8 / float / fp16) with an accuracy report"),
    "voc2coco": ("voc2coco", "convert a Pascal-VOC folder to COCO instances JSON files"),
    "predict": ("predict", "run a trained model on your own images"),
    "benchmark": ("benchmark", "time one training step on random data"),
    "config-reference": ("config_reference", "print the config reference table (Markdown)"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: detector COMMAND [options]   (detector COMMAND --help for its options)", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def _prepare_environment() -> None:
    """Quiet third-party start-up chatter; done by the program, never by a library import."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations phones home on import otherwise
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run(command: str, argv: list[str]) -> int:
    """Run subcommand ``command`` with ``argv``; return its exit code (2 for user errors)."""
    _prepare_environment()
    if command not in COMMANDS:
        print(f"error: unknown command '{command}'\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, _ = COMMANDS[command]
    try:
        module = importlib.import_module(f"detector.commands.{module_name}")
    except ModuleNotFoundError as e:
        if e.name != f"detector.commands.{module_name}":
            raise
        print(f"error: command '{command}' is not available in this version", file=sys.stderr)
        return 2
    from detector.commands.common import run_main

    prog = f"detector {command}"
    return run_main(lambda: module.main(argv, prog=prog))


def main(argv: list[str] | None = None) -> int:
    """``detector COMMAND ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    return run(argv[0], argv[1:])


def _entry(command: str):
    def entry() -> None:
        sys.exit(run(command, sys.argv[1:]))

    entry.__name__ = f"{command.replace('-', '_')}_main"
    return entry


def console_main() -> None:
    sys.exit(main())


train_main = _entry("train")
eval_main = _entry("eval")
inspect_data_main = _entry("inspect")
export_main = _entry("export")
predict_main = _entry("predict")
