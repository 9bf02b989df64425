"""Check tooling the tests, the demo and CI run against a live stack: the chaos harness and the PHI leak scanner."""
