"""Bringing networks trained elsewhere into bpnet."""
