"""govledger."""
