"""The one version source is labextension/package.json (read by hatch-nodejs-version)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kernelkit")
except PackageNotFoundError:  # a source checkout that was never installed
    __version__ = "0.0.0+unknown"
