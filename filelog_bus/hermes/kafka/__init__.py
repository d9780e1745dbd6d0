"""The road to Hermes's Kafka bus: a bus copied into a one-partition topic exactly once, and
hermes-client offsets translated to the topic's.

Needs kafka-python (``pip install 'filelog-bus[kafka]'``); the rest of filelog-bus does not.
``marks`` is pure; ``topic`` is the only module that talks to a broker; ``export`` copies a bus;
``client_offsets`` translates client positions.
"""
