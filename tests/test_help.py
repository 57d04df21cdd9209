"""Issue 24 item 5: every flag of every subcommand has a help line, and flags that take a registered name list
the valid names in the help itself (checked against the registries, so a new head or detector shows up)."""
import argparse

from facealign.cli import build_parser


def _parsers(parser, path=("facealign",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, path + (name,))


PARSERS = dict((" ".join(path), p) for path, p in _parsers(build_parser()))


def _help(command: str, flag: str) -> str:
    action = next(a for a in PARSERS[command]._actions if flag in a.option_strings)
    return action.help


def test_every_argument_of_every_subcommand_has_help():
    missing = [f"{cmd} {a.option_strings or a.dest}" for cmd, p in PARSERS.items() for a in p._actions
               if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
               and not (a.help and a.help.strip())]
    assert missing == []
    assert len(PARSERS) > 15  # the walk reached the subcommands


def test_train_flags_list_the_registered_names():
    command = "facealign train"
    from facealign.training.losses import LOSSES
    from facealign.models.backbone import NON_TIMM_BACKBONES, PACKAGED_WEIGHTS
    from facealign.models.heads import HEADS
    text = {flag: _help(command, flag) for flag in ("--head", "--loss", "--backbone", "--init")}
    assert all(name in text["--head"] for name in HEADS)
    assert all(spec.name in text["--loss"] for spec in LOSSES.values())
    assert all(name in text["--backbone"] for name in [*NON_TIMM_BACKBONES, *PACKAGED_WEIGHTS])
    assert all(init in text["--init"] for inits in PACKAGED_WEIGHTS.values() for init in inits)


def test_detector_backend_and_model_flags_list_the_registered_names():
    from facealign.detection.detectors import DETECTORS
    from facealign.inference.backends import BACKENDS
    from facealign.models.weights import PACKAGED_MODELS
    for command in ("facealign boxes", "facealign evaluate", "facealign predict"):
        assert all(name in _help(command, "--detector") for name in DETECTORS), command
    assert all(name in _help("facealign predict", "--backend") for name in BACKENDS)
    for command in ("facealign predict", "facealign evaluate"):
        assert all(name in _help(command, "--model") for name in PACKAGED_MODELS), command
    from facealign.training.config import PRESETS
    assert all(name in _help("facealign train", "--preset") for name in PRESETS)
