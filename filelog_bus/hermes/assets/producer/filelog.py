"""Hermes producer plugin `filelog`, installed by `filelog-bus hermes-install`.

The implementation lives in the `filelog-bus` package installed in Hermes's Python environment.
"""

from hermes_plugin import FilelogProducerPlugin

HERMES_PLUGIN_CLASSNAME = "FilelogProducerPlugin"

__all__ = ["HERMES_PLUGIN_CLASSNAME", "FilelogProducerPlugin"]
