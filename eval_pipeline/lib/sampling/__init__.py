"""Sampling: the stratified draw and the eval set's versions."""
