"""How the kernel's messages reach the browser outside the views: comms, not pictures.

``labcomm`` is the kernel side of the JupyterLab extension's comm (protocol v1,
``docs/protocol.md``): it reads each fit's ``kernelkit.status.FitStatus`` and
answers the extension's Stop command. ``subshell`` pins a comm (the link's, a
view's Stop button) to a kernel-created subshell, so its messages are handled
while a training cell is busy.

This package may use ipykernel's comms and IPython; it never imports a view,
the session or the magic, and the core never imports it (``[tool.importlinter]``
in ``pyproject.toml``). ``%load_ext kernelkit`` connects the link as a sink of
every fit (``kernelkit.display.add_fit_sink``).
"""
