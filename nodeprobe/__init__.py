"""Node probe: checks that an SGX node can attest (devices, AESM, PCCS) and publishes the Node condition."""
