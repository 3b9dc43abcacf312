"""Tests of the upstream simulators, driven over real HTTP the way a client sees them."""
