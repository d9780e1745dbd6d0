"""Everything specific to Hermes: the plugin bodies, client caches, the clients report, the
installer and its assets, and the road to Hermes's Kafka bus (``kafka``, an optional extra).

The engine (``filelog_bus``) knows nothing of Hermes; this package builds on it, and the
top-level ``hermes_plugin.py`` and ``hermes_consumer_plugin.py`` are the thin classes Hermes loads.
"""
