"""`mindformers-hf eval`: lm_eval's own `run` command (its flags, its result and sample files) with
`--model mindformers_hf` preselected. `--model hf` still runs lm_eval's torch backend, for comparisons."""
from importlib.util import find_spec

INSTALL_HINT = 'mindformers-hf eval needs lm-evaluation-harness: pip install -e ".[eval]"'
HELP = "lm-evaluation-harness on our models (lm_eval's flags; --model mindformers_hf preselected)"


class _AsEval:
    """Hands lm_eval's `Run` command our subparsers under the name `eval`, so it adds every flag it has."""

    def __init__(self, subparsers):
        self.subparsers = subparsers

    def add_parser(self, name, **kwargs):
        kwargs.update(help=HELP, usage="mindformers-hf eval --model_args pretrained=DIR --tasks TASK [options]")
        return self.subparsers.add_parser("eval", **kwargs)


def add_eval_parser(subparsers):
    if find_spec("lm_eval") is None:
        # no option prefix: any flags land in `rest`, so the user sees the install hint, not a usage error
        parser = subparsers.add_parser("eval", help=HELP, add_help=False, prefix_chars="\x00")
        parser.add_argument("rest", nargs="*")
        parser.set_defaults(func=_missing)
        return parser
    from lm_eval._cli.run import Run

    parser = Run(_AsEval(subparsers))._parser
    parser.set_defaults(func=cmd_eval, model="mindformers_hf")
    parser.epilog = "lm_eval's documentation: https://github.com/EleutherAI/lm-evaluation-harness (docs/interface.md)"
    for action in parser._actions:  # lm_eval's help names its own default
        if action.dest == "model":
            action.help = "lm_eval model name (default: mindformers_hf; hf runs lm_eval's torch backend)"
    return parser


def _missing(args):
    raise SystemExit(f"error: {INSTALL_HINT}")


def cmd_eval(args):
    from lm_eval._cli.run import Run
    from lm_eval.utils import setup_logging

    from .. import evaluation  # noqa: F401  (registers the mindformers_hf model)

    setup_logging()
    Run._execute(args)
    return 0
