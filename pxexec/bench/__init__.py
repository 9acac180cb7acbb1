"""Workloads behind `pxexec bench`."""
