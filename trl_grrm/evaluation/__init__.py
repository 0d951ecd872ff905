"""Evaluation: judge ranking accuracy (`ranking`) and MT quality (`mt`)."""
