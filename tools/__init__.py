"""Operator and developer tools: the `medistream` command, one module per command group.

Above every other package: tools import jobs, connectors, infra/local and udfs; nothing imports
tools. The check tooling the tests and CI run (chaos harness, PHI leak scanner) is in tools/checks/.
"""
