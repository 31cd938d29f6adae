"""``%%kmodel`` and ``%kmodel``: thin sugar over ``kernelkit.session``.

Arguments are declared once with IPython's ``magic_arguments`` (so
``%kmodel?`` documents every option). Misuse raises a plain
``IPython.core.error.UsageError``: IPython prints that class as one line,
while a subclass would bring the whole traceback back.
"""

from __future__ import annotations

import contextlib
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from . import _fitting, display


@magics_class
class KernelkitMagics(Magics):
    """The kernelkit magics."""

    @magic_arguments()
    @argument("name", nargs="?", help="The variable the cell assigns its keras.Model to.")
    @argument(
        "--strategy",
        default="auto",
        help="Where to build and train: auto (TPU > several GPUs > default), cpu, gpu, "
        "mirrored or tpu. Default: auto.",
    )
    @argument("--seed", default=None, help="Call keras.utils.set_random_seed(N) first.")
    @argument(
        "--deterministic",
        action="store_true",
        help="Also turn on TensorFlow op determinism (slower, reproducible).",
    )
    @argument("--no-card", action="store_true", help="Do not show the model card at the end.")
    @argument("--devices", action="store_true", help="Show the devices report (line magic).")
    @argument(
        "--workers",
        type=int,
        default=None,
        help="Train data-parallel in N worker processes (Keras's JAX distribution).",
    )
    @argument(
        "--resume", default=None, help="Directory for BackupAndRestore: resume after a crash."
    )
    @argument(
        "--checkpoint",
        default=None,
        help="Save the best weights to this path: by val_loss, or by the training loss for a "
        "fit without validation data.",
    )
    @argument(
        "--tensorboard",
        action="store_true",
        help="Write TensorBoard logs to runs/NAME/<timestamp> (no server starts).",
    )
    @argument(
        "--lr-find",
        action="store_true",
        help="Run kernelkit.lr_find on the cell's fit arguments instead of training: it "
        "sweeps the learning rate, suggests one and leaves the model as it was.",
    )
    @argument(
        "--watch",
        action="store_true",
        help="Record each layer's activation mean, spread and dead units once per epoch, on "
        "a probe of the fit's first 32 inputs; the card's Activations tab shows them.",
    )
    @line_cell_magic
    def kmodel(self, line: str, cell: str | None = None) -> Any:
        """Build, compile and train a Keras model with live progress.

        As a cell magic, ``%%kmodel NAME [options]`` runs the cell as normal
        Python in the notebook's namespace, inside the chosen distribution
        strategy's scope; every ``fit`` in it (and later ``NAME.fit``) gets
        live progress and a graceful interrupt; the cell must assign a
        ``keras.Model`` to ``NAME``, which is registered and shown as a
        model card.

        As a line magic: ``%kmodel`` lists the registered models,
        ``%kmodel NAME`` shows the card again, ``%kmodel --devices`` shows
        the devices report.
        """
        try:
            args = parse_argstring(self.kmodel, line)
        except UsageError as err:
            # argparse says what is wrong ("unrecognized arguments: --bogus"); add the fix.
            raise UsageError(
                f"%kmodel: {err}; see %kmodel? for every option and its values"
            ) from None
        if cell is None:
            return self._line(args)
        return self._cell(args, cell)

    def _line(self, args: Any) -> Any:
        from . import session

        # Every option but NAME and --devices belongs to the cell magic: read them from the
        # parser itself, so an option added later is refused here too.
        defaults = parse_argstring(self.kmodel, "")
        given = [
            action.option_strings[0]
            for action in self.kmodel.parser._actions
            if action.option_strings
            and action.dest not in ("devices", "help")
            and getattr(args, action.dest) != getattr(defaults, action.dest)
        ]
        if given:
            raise UsageError(
                f"{given[0]} is a %%kmodel cell option, which the line magic does not use: "
                f"put it on a %%kmodel {args.name or 'NAME'} cell (the line magic takes NAME "
                "or --devices)"
            )

        if args.devices:
            from .devices import devices

            return devices()
        if not args.name:
            return session.models()
        try:
            model = session.get(args.name)
        except KeyError as err:
            raise UsageError(str(err.args[0])) from None
        return session.card(model)

    def _cell(self, args: Any, cell: str) -> Any:
        from . import session

        if not args.name:
            raise UsageError(
                "%%kmodel needs a NAME: the variable the cell assigns its model to, "
                "e.g. %%kmodel clf"
            )
        try:
            return session.run_cell(
                self.shell,
                args.name,
                cell,
                strategy=args.strategy,
                seed=args.seed,
                deterministic=args.deterministic,
                show_card=not args.no_card,
                workers=args.workers,
                resume=_unquote(args.resume),
                checkpoint=_unquote(args.checkpoint),
                tensorboard=args.tensorboard,
                lr_find=args.lr_find,
                watch=args.watch,
            )
        except (ValueError, TypeError, KeyError, OSError) as err:
            message = err.args[0] if err.args else str(err)
            raise UsageError(str(message).splitlines()[0]) from None


def _unquote(value: str | None) -> str | None:
    """IPython's parse_argstring keeps quotes (arg_split(posix=False)): "a b" -> a b."""
    if value and len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def load_ipython_extension(ipython: Any) -> None:
    """Registers the magics and tells the JupyterLab extension we are here.

    Keras is not imported here (``%load_ext`` stays fast); the session loads
    on the first ``%%kmodel`` or fit.
    """
    ipython.register_magics(KernelkitMagics)
    with contextlib.suppress(Exception):
        from .transport import labcomm

        labcomm.start(ipython)
        labcomm.on_stop(_stop_from_lab)
        display.add_fit_sink(_LAB_SINK)  # every fit from now on reports to the status item


def _stop_from_lab() -> None:
    """The extension's Stop command: only sets flags (it runs on a subshell thread)."""
    _fitting.stop_current("user")


class _LabSink:
    """A fit's events to the JupyterLab status item, with the device label before the first."""

    def __init__(self) -> None:
        self.device_sent = False

    def __call__(self, event: Any) -> None:
        from . import events
        from .transport import labcomm

        if not self.device_sent and isinstance(event, events.TrainBegin):
            self.device_sent = True
            with contextlib.suppress(Exception):
                from .devices import devices

                labcomm.set_device(devices().label())
        labcomm.publish(event)


_LAB_SINK = _LabSink()


def unload_ipython_extension(ipython: Any) -> None:
    """Hides the JupyterLab status item; IPython forgets the magics itself."""
    display.remove_fit_sink(_LAB_SINK)
    with contextlib.suppress(Exception):
        from .transport import labcomm

        labcomm.close()
