"""Real servers the tests start on loopback (Synapse); see install.sh for installing them."""
