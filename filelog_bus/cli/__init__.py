"""The operator commands: ``filelog-dump`` and ``filelog-bus dump|stats|verify|clients|retention|
kafka-export|demo|hermes-install``.

A thin layer over the engine and filelog_bus.hermes: one module per command (its parser and
handler), plus what they share: option types (args), formatting
(format), the exit-status table (exits) and the error handling (run). Entry points:
``filelog_bus.cli.main:main`` and ``filelog_bus.cli.dump:dump_main``. This package imports
none of its modules here, so that a command module may use the shared ones without a cycle.
"""
