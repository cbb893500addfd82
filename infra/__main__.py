"""analytics-platform: load the settings, build the platform, export its outputs."""

import sys
from pathlib import Path

# The Pulumi language host runs this folder with runpy, with the folder itself (not the
# repository root) on sys.path; the program's modules are imported as the `infra` package.
if __package__ in (None, ""):
    _root = str(Path(__file__).resolve().parent.parent)
    if _root not in sys.path:
        sys.path.insert(0, _root)

import pulumi

from infra.platform import AnalyticsPlatform
from infra.providers import create_providers
from infra.settings import load_settings

settings = load_settings()
providers = create_providers(settings)
platform = AnalyticsPlatform("analytics-platform", settings, providers)
for name, value in platform.exports.items():
    pulumi.export(name, value)
