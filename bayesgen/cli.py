"""The ``bayesgen`` command line: demo, fit, summary, compare, sbc and list."""

from __future__ import annotations

import argparse
import ast
import os
import sys
import warnings
from typing import Any, Sequence

__all__ = ["main"]

#: The exit status of a command stopped by Ctrl-C, as a shell gives one killed by SIGINT.
_INTERRUPTED = 130


#: Words a shell user writes for Python's constants (``--arg centered=false`` must not be the
#: string "false", which Python counts as true).
_CONSTANTS = {"true": True, "false": False, "none": None, "null": None}


def _options(pairs: Sequence[str], flag: str = "--option") -> dict[str, Any]:
    """``KEY=VALUE`` pairs as a mapping; values are Python literals (``500``, ``0.9``, ``[1, 2]``),
    true/false/none in any case, or else strings."""
    options = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise ValueError(f"{flag} expects key=value, got '{pair}'")
        if raw.strip().lower() in _CONSTANTS:
            options[key] = _CONSTANTS[raw.strip().lower()]
            continue
        try:
            options[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            options[key] = raw
    return options


def _program(model: str) -> Any:
    """A zoo model's name as it is; ``FILE.py:FUNCTION`` as the function, loaded from the file."""
    path, sep, function = model.rpartition(":")
    if not sep or not path.endswith(".py"):
        if model.endswith(".py"):
            raise ValueError(f"name the program in {model}: {model}:FUNCTION (the function that is the Pyro program)")
        return model
    import importlib.util

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no program file {path!r}")
    # as `python FILE.py` would: its folder on the import path (for modules beside it), and the module
    # registered under its name (so that worker processes can pickle the program by reference)
    folder = os.path.dirname(os.path.abspath(path))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's file: its own error, named, not a traceback
        del sys.modules[name]
        raise ValueError(f"{path} raised {type(exc).__name__} on import: {exc}") from exc
    program = getattr(module, function, None)
    if not callable(program):
        found = sorted(name for name, value in vars(module).items()
                       if callable(value) and not name.startswith("_") and getattr(value, "__module__", None)
                       == module.__name__)
        raise ValueError(f"{path} has no function {function!r}; its functions: {', '.join(found) or 'none'}")
    return program


def _read_data(path: str) -> dict[str, Any]:
    """Program arguments from a file: the arrays of a ``.npz``, the columns of a ``.csv`` (with a
    header row) or the keys of a ``.json`` object."""
    import numpy as np

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no data file {path!r}")
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".npz":
        with np.load(path) as arrays:
            return {key: arrays[key] for key in arrays.files}
    if suffix == ".csv":
        import pandas as pd

        frame = pd.read_csv(path)
        return {str(column): frame[column].to_numpy() for column in frame.columns}
    if suffix == ".json":
        import json

        with open(path) as handle:
            data = json.load(handle)
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold one JSON object, argument name -> value; it holds a "
                             f"{type(data).__name__}")
        return data
    raise ValueError(f"--data reads .npz, .csv and .json files, not {path!r}")


def _data(args: argparse.Namespace, model: Any) -> dict[str, Any] | None:
    """The program's arguments: ``--data`` (else a zoo model's default data), then each ``--arg``
    over them; None leaves a zoo model to its default data."""
    if args.data is None and not args.arg:
        return None if isinstance(model, str) else {}
    if args.data is not None:
        data = _read_data(args.data)
    elif isinstance(model, str):
        import bayesgen as bg

        spec = bg.get_model(model)
        data = spec.load_data() if spec.load_data is not None else {}
    else:
        data = {}
    return {**data, **_options(args.arg, "--arg")}


def _demo(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from bayesgen.demo import run_demo

    run_demo(args.out, smoke=args.smoke)


def _join(args: argparse.Namespace, device: str | None = None) -> Any:
    """This process's ``Ranks`` in the group torchrun started, with ``--distributed``; else None."""
    if not args.distributed:
        return None
    from bayesgen.distributed import init_process_group

    return init_process_group(device)


def _writes(args: argparse.Namespace) -> bool:
    """Whether this process writes the command's files: any but a distributed run's ranks other than 0
    (torchrun's RANK, read before the group is joined), whose folders may be on other machines."""
    return not args.distributed or os.environ.get("RANK", "0") == "0"


def _fit(args: argparse.Namespace) -> int:
    import numpy as np

    import bayesgen as bg

    if args.out and _writes(args):
        from bayesgen._files import check_writable

        check_writable(args.out)  # before the fit, not after it
    model = _program(args.model)
    data = _data(args, model)
    ranks = _join(args, args.device)
    fit = bg.fit(model, data, engine=args.engine, seed=args.seed, device=args.device, dtype=args.dtype,
                 progress=False if args.quiet or (ranks is not None and not ranks.is_root) else None,
                 distributed=args.distributed, **_options(args.option))
    if ranks is not None and not ranks.is_root:
        return 0  # every process holds the same fit; rank 0 reports and writes it
    if args.out:  # first: a reader that stops early (| head) must not cost the fit
        fit.save(args.out)
        args.saved = args.out
    _print_summary(fit)
    if "loss" in fit.sample_stats:
        loss = np.asarray(fit.sample_stats["loss"]).reshape(-1)
        print(f"final loss (mean of the last {min(100, loss.size)} steps): {loss[-100:].mean():.6g}")
    for finding in bg.check(fit):
        print(f"warning: {finding}")
    if args.out:
        print(f"saved to {args.out}")
    if fit.info.get("interrupted"):  # the work done so far is kept, but the run did not finish
        print(f"bayesgen: interrupted: the fit holds the work done before Ctrl-C"
              f"{f' (saved to {args.out})' if args.out else ''}", file=sys.stderr)
        return _INTERRUPTED
    return 0


def _print_summary(fit: Any) -> None:
    """The posterior's summary table, or for a fit of network weights alone what it holds instead."""
    import numpy as np

    if fit.posterior:
        print(fit.summary().to_string())
    else:
        sizes = sum(np.size(value) for value in fit.params.values())
        print(f"{fit.model_name}: no latent sites outside its networks; {len(fit.params)} trained parameters "
              f"({sizes} numbers) in the fit's params")


def _summary(args: argparse.Namespace) -> None:
    import bayesgen as bg

    fit = bg.load(args.path)
    print(f"{fit.model_name}: engine {fit.engine} ({fit.kind})")
    _print_summary(fit)
    for finding in bg.check(fit):
        print(f"warning: {finding}")


def _labels(paths: Sequence[str], engines: Sequence[str]) -> list[str]:
    """Label saved fits by engine, with the file's name beside it where that adds anything."""
    from pathlib import Path

    stems = [Path(path).stem for path in paths]
    names = stems if len(set(stems)) == len(stems) else list(paths)
    return [engine if name == engine else f"{engine} ({name})" for engine, name in zip(engines, names)]


def _compare(args: argparse.Namespace) -> None:
    from pathlib import Path

    import bayesgen as bg

    if len(args.paths) < 2:
        swallowed = [name for name in args.var_names or () if Path(name).is_file()]
        hint = (f" (--var-names also took {', '.join(swallowed)} as site names: put the fits before it, "
                "or end its names with --)") if swallowed else ""
        raise ValueError(f"compare needs at least two saved fits, got {len(args.paths)}{hint}")
    if len(set(map(os.path.realpath, args.paths))) < len(args.paths):
        raise ValueError(f"compare needs two or more different fits; a file is named twice in {' '.join(args.paths)}")
    if args.out:
        from bayesgen._files import check_writable

        check_writable(args.out, example="overlay.png")  # before the comparison, not after it
    from bayesgen._seeding import check_seed

    check_seed(args.seed)
    loaded = [bg.load(path) for path in args.paths]
    labels = _labels(args.paths, [fit.engine for fit in loaded])
    fits = dict(zip(labels, loaded))
    reference = args.reference
    if reference is not None:
        by_file = {key: label for path, label in zip(args.paths, labels) for key in (path, Path(path).stem, label)}
        if reference not in by_file:
            raise ValueError(f"--reference '{reference}' names none of the fits: use an engine label "
                             f"({', '.join(labels)}) or a file name ({', '.join(args.paths)})")
        reference = by_file[reference]
    else:
        reference = next((label for label, fit in fits.items() if fit.kind == "samples"), labels[0])
    for label, path in zip(labels, args.paths):
        role = "reference" if label == reference else "compared"
        print(f"{role:>9}: {label:<16} {path} ({fits[label].kind}, model {fits[label].model_name})")
    table = bg.compare(fits, reference=reference, var_names=args.var_names, seed=args.seed)
    columns = ["engine", "parameter", "ref_mean", "mean", "mean_diff_sd", "sd_ratio", "ks_pvalue",
               "w1_pvalue", "mmd_pvalue"]
    print(table[columns].to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    print(f"mean_diff_sd: mean shift in sds of {reference}; sd_ratio: sd / sd of {reference}; "
          "ks, w1: two-sample tests of each parameter against it; mmd: one joint test of all parameters per fit")
    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        bg.plot_compare(fits, var_names=args.var_names, path=args.out)
        print(f"saved the overlay of posterior densities to {args.out}")


def _sbc(args: argparse.Namespace) -> None:
    from bayesgen.sbc import sbc

    if args.out and _writes(args):
        from bayesgen._files import check_writable

        check_writable(args.out, example="sbc.png")
    model = _program(args.model)
    ranks = _join(args)
    result = sbc(model, _data(args, model), engine=args.engine, options=_options(args.option), num_simulations=args.num_simulations,
                 num_draws=args.num_draws, alpha=args.alpha, seed=args.seed, num_workers=args.num_workers,
                 progress=False if args.quiet else None, distributed=args.distributed)
    if ranks is not None and not ranks.is_root:
        return
    print(f"{args.model}: simulation-based calibration of engine {args.engine}, {args.num_simulations} simulations, "
          f"ranks among {args.num_draws} draws (chi-square uniformity tests, Holm-corrected)")
    print(result.tests.to_string())
    if result.rejected:
        print(f"not calibrated at family-wise alpha {args.alpha}: {', '.join(result.rejected)}")
    elif result.untested:
        print(f"too few simulations to test {', '.join(result.untested)}: run at least 10 "
              "(--num-simulations), so that two bins of ranks expect five each")
    else:
        print(f"no quantity rejects uniform ranks at family-wise alpha {args.alpha}")
    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        result.plot(args.out)
        print(f"wrote {args.out}")


def _list(args: argparse.Namespace) -> None:
    import bayesgen as bg

    print("models (and the engines that apply to each):")
    for name, description in bg.list_models().items():
        print(f"  {name:<20} {description}")
        print(f"  {'':<20} engines: {', '.join(bg.get_model(name).engines)}")
    print("engines: " + ", ".join(bg.list_engines()))


def _engines(args: argparse.Namespace) -> None:
    import bayesgen as bg
    from bayesgen.registry import engine_options, get_engine_class

    import textwrap

    for name in bg.list_engines():
        paragraph = " ".join((get_engine_class(name).__doc__ or "").strip().split("\n\n")[0].split())
        print(textwrap.fill(f"{name}: {paragraph.replace('``', '').split('. ')[0].rstrip('.')}", 100,
                            subsequent_indent="  "))
        options = engine_options(name)
        names = max(len(option) for option, _, _ in options)
        defaults = max(len(repr(default)) for _, default, _ in options)
        for option, default, description in options:  # columns as wide as their longest entry
            print(textwrap.fill(f"  {option:<{names}} {default!r:<{defaults}} {description}", 100,
                                subsequent_indent=" " * (names + defaults + 4)))
    print("set options with: bayesgen fit MODEL --engine NAME --option KEY=VALUE, "
          "or bg.fit(..., engine=NAME, KEY=VALUE)")


_MODEL_HELP = ("a zoo model's name (see 'bayesgen list'), or your own Pyro program as FILE.py:FUNCTION "
               "(e.g. schools.py:model)")
_DATA_HELP = ("the program's arguments from a .npz (its arrays), .csv (its columns, with a header row) or .json "
              "file (an object of name -> value); default: a zoo model's bundled data")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bayesgen", description="Fit Pyro programs with any engine.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="fit the bundled diabetes regression with every engine, side by side, "
                          "and save the fits and a plot")
    demo.add_argument("--smoke", action="store_true",
                      help="a seconds-long check that everything works (too few draws for valid inference)")
    demo.add_argument("--out", default="bayesgen-demo", help="folder for the fit files and the plot "
                      "(default: bayesgen-demo)")
    demo.set_defaults(run=_demo)
    fit = sub.add_parser("fit", help="fit a zoo model or your own program and print the summary")
    fit.add_argument("model", help=_MODEL_HELP)
    fit.add_argument("--data", metavar="FILE", help=_DATA_HELP)
    fit.add_argument("--engine", default="nuts", help="engine name (default: nuts)")
    fit.add_argument("--seed", type=int, default=0, help="seed of the fit: the same seed gives the same draws")
    fit.add_argument("--device", default=None, help="cpu, cuda or cuda:N")
    fit.add_argument("--dtype", default=None, choices=["float32", "float64"],
                     help="precision to compute in (default: the data's: float64 for float arrays and lists "
                          "of numbers with a decimal point, torch's float32 where all data are integers)")
    fit.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                     help="an engine option, e.g. --option num_samples=500 (repeatable)")
    fit.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE",
                     help="a program argument, a Python literal, over --data or a zoo model's default data "
                          "(e.g. batch_size=128); repeatable")
    fit.add_argument("--distributed", action="store_true",
                     help="share the fit among the processes torchrun starts: the minibatches (a plate that "
                          "subsamples) of svi, and of mle and map of programs with networks; the chains of nuts "
                          "and hmc; rank 0 prints and saves")
    fit.add_argument("--out", help="save the fit to this netCDF file")
    fit.add_argument("--quiet", action="store_true", help="no progress bar")
    fit.set_defaults(run=_fit)
    summary = sub.add_parser("summary", help="summarise a fit saved with --out or Fit.save")
    summary.add_argument("path", help="a fit saved by bayesgen fit --out (or Fit.save)")
    summary.set_defaults(run=_summary)
    versus = sub.add_parser("compare", help="compare fits saved with --out or Fit.save, parameter by parameter")
    versus.add_argument("paths", nargs="*", metavar="path", help="saved fits (two or more), labelled by engine "
                        "in the report (and by file name where two share an engine)")
    versus.add_argument("--reference", help="the fit the others are compared with, by engine label or file name "
                        "(default: the first MCMC fit, else the first)")
    versus.add_argument("--var-names", nargs="+", help="posterior sites to compare (default: all shared)")
    versus.add_argument("--seed", type=int, default=0, help="seed of the permutation tests")
    versus.add_argument("--out", help="write an overlay of the marginal posterior densities to this PNG")
    versus.set_defaults(run=_compare)
    calibrate = sub.add_parser("sbc", help="simulation-based calibration of a zoo model or your own program "
                               "under an engine")
    calibrate.add_argument("model", help=_MODEL_HELP)
    calibrate.add_argument("--data", metavar="FILE", help=_DATA_HELP + "; the observed ones are simulated")
    calibrate.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE",
                           help="a program argument, a Python literal, over --data (repeatable)")
    calibrate.add_argument("--engine", default="nuts", help="engine name (default: nuts)")
    calibrate.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                           help="an engine option, e.g. --option num_samples=500 (repeatable)")
    calibrate.add_argument("--num-simulations", type=int, default=100, help="simulated data sets (default: 100)")
    calibrate.add_argument("--num-draws", type=int, default=99,
                           help="posterior draws each true value is ranked among (default: 99)")
    calibrate.add_argument("--alpha", type=float, default=0.01, help="family-wise level of the tests (default: 0.01)")
    calibrate.add_argument("--seed", type=int, default=0, help="seed of the simulations and their fits")
    calibrate.add_argument("--num-workers", "--workers", dest="num_workers", type=int, default=None,
                           help="parallel processes (default: all cores; 1 per process with --distributed)")
    calibrate.add_argument("--distributed", action="store_true",
                           help="share the simulations among the processes torchrun starts; rank 0 reports")
    calibrate.add_argument("--out", help="write the ECDF-difference plot of the ranks to this PNG")
    calibrate.add_argument("--quiet", action="store_true", help="no progress bar")
    calibrate.set_defaults(run=_sbc)
    listing = sub.add_parser("list", help="list the zoo models and the engines")
    listing.set_defaults(run=_list)
    engines = sub.add_parser("engines", help="list the engines with their options, defaults and what each does")
    engines.set_defaults(run=_engines)
    for command in sub.choices.values():  # an unknown option is reported with its command's usage
        command.set_defaults(command_parser=command)
    return parser


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """A warning as one line of the command's own ("bayesgen: warning: ..."), without the source
    line Python prints, which names a file inside the library (contextlib.py:81)."""
    print(f"bayesgen: warning: {message}", file=sys.stderr if file is None else file)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bayesgen`` command."""
    args, unknown = _parser().parse_known_args(argv)
    if unknown:
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return args.run(args) or 0
    except BrokenPipeError:  # the reader stopped early (| head): nothing more to say, and no traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's own flush at exit would fail again
        return 1
    except KeyboardInterrupt:
        saved = getattr(args, "saved", None)
        print(f"bayesgen: interrupted; {f'the fit was saved to {saved} before' if saved else 'nothing was saved'}",
              file=sys.stderr)
        return _INTERRUPTED
    except (ValueError, TypeError, ImportError, OSError) as exc:  # OSError: a file that cannot be read or written
        print(f"bayesgen: error: {exc}", file=sys.stderr)
        if getattr(args, "distributed", False):  # the other processes may wait in a collective: leave at once
            from bayesgen.distributed import abandon

            abandon()
        return 2
