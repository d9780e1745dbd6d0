"""Everything specific to Hermes: the plugin bodies, client caches and the offsets --set-offsets
writes into them, the clients report, the installer and its assets, and the road to Hermes's
Kafka bus (``kafka``, an optional extra).

The engine (``filelog_bus``) knows nothing of Hermes, with one exception: filelog_bus.errors
holds every public error, this package's too (client caches, Kafka), so that a caller catches them
from one place. This package builds on the engine, and the top-level ``hermes_plugin.py`` and
``hermes_consumer_plugin.py`` are the thin classes Hermes loads.
"""
