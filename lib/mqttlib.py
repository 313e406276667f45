"""paho-mqtt's client module, imported without what chariotd never uses.

paho imports `urllib.request` at load time (with http.client and the email
package: about 1 MB on armv7) but reads it only for proxy settings when
PySocks is installed. A stand-in takes its place until something touches
it, at which point the real module is imported. Nothing else changes.
"""

import importlib
import sys
import types
import urllib


class _Deferred(types.ModuleType):
    def __getattr__(self, attr):
        del sys.modules[self.__name__]
        real = importlib.import_module(self.__name__)
        self.__dict__.update(real.__dict__)
        return getattr(real, attr)


if "urllib.request" not in sys.modules:
    sys.modules["urllib.request"] = urllib.request = _Deferred("urllib.request")

import paho.mqtt.client as mqtt  # noqa: E402

__all__ = ["mqtt"]
