"""Hermes consumer plugin `filelog`, installed by `filelog-bus hermes-install`.

The implementation lives in the `filelog-bus` package installed in Hermes's Python environment.
"""

from hermes_consumer_plugin import FilelogConsumerPlugin

HERMES_PLUGIN_CLASSNAME = "FilelogConsumerPlugin"

__all__ = ["HERMES_PLUGIN_CLASSNAME", "FilelogConsumerPlugin"]
