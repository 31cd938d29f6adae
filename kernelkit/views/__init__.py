"""Thin views: they render what they are given (events, a model's state) and send intents.

Nothing here changes a model by itself: clicks become ``kernelkit.intents`` that
the session applies. The core (``kernelkit.callback``, ``kernelkit.lr_find``...)
never imports this package; ``kernelkit/__init__.py`` installs the views it
uses (``kernelkit.display``).
"""
