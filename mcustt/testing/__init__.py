"""Contract suites for mcustt's seams: importable by third-party implementations; needs
pytest (the dev extra); imported only by test suites."""
