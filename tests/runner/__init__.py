"""Tests of the runner, tracking, records and the `repro` command line."""
