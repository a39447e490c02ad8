"""Helpers the tests share: real servers on loopback, row builders, reference computations.

Tests import these; nothing here is collected as a test."""
