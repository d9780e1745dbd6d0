"""What the tests share: building and reading buses, processes, users with fewer permissions, faults, the crash model, Kafka, Hermes's stand-ins.

tests/ is on sys.path (pyproject's pytest ``pythonpath``), so tests import ``helpers.<module>``;
child processes get it with ``extra_path=[TESTS_DIR]`` (helpers.processes).
"""
