"""Tests of the Freshsales client."""
